"""ct-seg's recipes: what `medkit run ct-seg [RECIPE]` executes."""
