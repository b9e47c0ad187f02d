"""The recipes of gan-aug: train, generate, metrics, classify, study."""
