"""ubc's recipes: what `medkit run ubc [RECIPE]` executes."""
