"""The experiment core: pure functions and classes (no files, no MLflow) that the stages call."""
