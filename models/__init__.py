"""Model recipes: each module defines ``build()`` (the architecture) and ``dataset(split)`` (numpy arrays).

A recipe's ``dataset`` returns a dict with one array per model input (named as in ``conf/model/<name>.yaml``)
and, for labelled data, a ``labels`` array. Splits: ``train`` (calibration, training) and ``test`` (eval).
"""
