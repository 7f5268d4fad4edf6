"""Making RWKV-7 weights for the local model: the demo model's training, and random weights.

    python -m longyarn.training.tokenizer_training --out .device/data   # data, on a CPU
    python -m longyarn.training.train --preset cpu --data .device/data --out demo_model

- `tokenizer_training`: the byte-level BPE and token arrays of the training books.
- `training_model`: RWKV-7 as a trainable `nn.Module` with BlinkDL's parameter names.
- `train`: the training run, its evaluation, and the saved longyarn model directory.
- `synthetic`: random weights in BlinkDL's layout, for tests and benchmarks.

Training uses the engine's model code (`longyarn.recurrent_core.local_lm`) and the kernels;
the engine never imports training.
"""
