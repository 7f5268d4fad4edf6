"""Making RWKV-7 weights for the local model: the demo model's training, and random weights.

    python -m longyarn.training.tokenizer_training --out .device/data   # data, on a CPU
    python -m longyarn.training.train --preset cpu --data .device/data --out demo_model

- `tokenizer_training`: the byte-level BPE and token arrays of the training books.
- `training_model`: RWKV-7 as a trainable `nn.Module` with BlinkDL's parameter names.
- `recall_episodes`: facts planted in passages and questions about them, for training, and the
  split that keeps `benchmarks/recall.py`'s items out of training.
- `batches`: what a step reads: windows of the books and rows of recall episodes.
- `train`: the training run and the saved longyarn model directory; `evaluation`: its figures.
- `synthetic`: random weights in BlinkDL's layout, for tests and benchmarks.

Training uses the engine's model code (`longyarn.recurrent_core.local_lm`) and the kernels;
the engine never imports training.
"""
