"""What several stages share: running a stage, errors, artifacts and atomic writes, data loading."""
