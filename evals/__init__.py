"""CrossCodeEval-format data, metrics, the mode runner, tables, figures and statistics."""
