"""The report's accuracy section: the gate's verdict paragraph (with the int8 note) and the per-output table, from
accuracy.json."""

from typing import Any

from stages.core.markdown import table


def accuracy_gate(acc: dict[str, Any]) -> str:
    """The report's verdict paragraph: the accuracy gate's result and numbers, a warning when the eval data was
    synthetic, and, for an int8 engine, its Q/DQ encoding and fallback rounds.

    Args:
        acc: accuracy.json's content.

    Returns:
        str: the paragraph's Markdown.
    """
    task = acc["task"]
    verdict = "PASSED" if acc["passed"] else "FAILED: " + "; ".join(acc["failures"])
    gate = (
        f"**Accuracy gate {verdict}** — {task['metric']} {task['candidate']:.4f} vs reference "
        f"{task['reference']:.4f} (drop {100 * task['delta']:.2f} pt, budget {100 * task['budget']:.2f} pt), "
        f"argmax agreement {100 * task['agreement']:.2f}%, {task['samples']} eval samples"
    )
    data = acc.get("data", {})
    gate += f" ({data['eval']})." if data else "."
    if data.get("synthetic"):
        gate += (
            f"\n\n> **Warning: no real data was used.** Eval inputs are {data['eval']}: the gate shows the engine "
            "agrees with the reference, not that the model is accurate. Set model.data.eval to an .npz of real samples."
        )
    return gate + int8_note(acc)


def int8_note(acc: dict[str, Any]) -> str:
    """The precision stage's Q/DQ encoding, calibration and fallback rounds, as compare recorded them.

    Args:
        acc: accuracy.json's content.

    Returns:
        str: the note's Markdown (with the blank line before it), empty for an engine that is not int8.
    """
    if "int8" not in acc:
        return ""
    fallback = acc["int8"]["fallback"]
    rounds = " → ".join(f"{100 * r['candidate']:.2f}%" for r in fallback["rounds"])
    kept = ", ".join(f"`{n}`" for n in fallback["excluded"]) or "none"
    state = "on" if fallback["enabled"] else "off (the int8 option's fallback key)"
    drawn = acc["int8"].get("calibration", {})
    calibrated = f"calibrated on {drawn['samples']} samples" if drawn else "calibrated"
    if "asked" in drawn:
        calibrated += f" (**{drawn['asked']} asked: the calibration data has no more**)"
    return (
        f"\n\nINT8: {acc['int8']['encoding']} Q/DQ, {calibrated}; fallback {state}; {acc['task']['metric']} by "
        f"round: {rounds}; nodes kept in float: {kept}."
    )


def accuracy_table(acc: dict[str, Any]) -> str:
    """Each output's errors against its tolerances, and the outputs whose atol was raised to float32's floor.

    Args:
        acc: accuracy.json's content.

    Returns:
        str: the table's Markdown, with the note on raised tolerances where there are any.
    """
    outputs = table(
        ["output", "max abs", "max rel", "mean abs", "rel L2", "atol", "rtol", "result"],
        [
            [
                n,
                f"{s['max_abs']:.3g}",
                f"{s['max_rel']:.3g}",
                f"{s['mean_abs']:.3g}",
                f"{s['rel_l2']:.3g}",
                f"{s['atol']:.3g}",
                f"{s['rtol']:.3g}",
                "pass" if s["passed"] else "FAIL",
            ]
            for n, s in acc["outputs"].items()
        ],
    )
    raised = [f"`{n}` ({f:.3g})" for n, f in acc.get("float32_floors", {}).items() if f >= acc["outputs"][n]["atol"]]
    if raised:
        outputs += (
            "\n\natol raised to float32's own floor (its logits are too large for float32 to resolve the "
            f"probabilities: stages/core/floor.py) on {', '.join(raised)}."
        )
    return outputs
