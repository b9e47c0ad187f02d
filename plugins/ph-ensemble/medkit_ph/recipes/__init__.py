"""The recipes of ph-ensemble: `ensemble` (default), `simple_cnn`, `finetune_effnet_b0`."""
