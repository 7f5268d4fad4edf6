"""Train the demo RWKV-7 on the prepared corpus, then evaluate it and save it in longyarn's format.

First prepare the data on a CPU (tokenizer, token arrays, held-out books):

    python -m longyarn.training.tokenizer_training --out .device/data

then train, on a GPU for a fixed wall-clock budget, or a smaller model on the CPU:

    python -m longyarn.training.train --preset gpu --data .device/data --out demo_model --time-budget-s 390
    python -m longyarn.training.train --preset cpu --data .device/data --out demo_model

Every step reads random windows of the books; with `--recall-rows` (both presets) it also reads
rows of recall episodes cut from the same books (`recall_episodes.py`: facts planted in a
passage, and questions about them, in the context-first and the JRT order), so the model learns
to answer from its context; `benchmarks/recall.py` measures that on items training never sees.

`--init-from DIR` starts from a saved model of the same shape instead of random weights.

Training stops at `--max-steps` or at `--time-budget-s`, whichever comes first. With a time
budget the learning-rate schedule is planned in steps once, after timing the first steps, so
the run ends annealed whatever the hardware; the plan is written to config.json, and passing
it back as `--max-steps` (same seed, same data) replays the same run. On a CPU the replay is
bit-for-bit; GPU kernels are not.

The output directory holds config.json, model.safetensors (or shards under 16 MB each),
tokenizer.json and eval.json (held-out bits per byte beside compressors' figures on the same
text).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from longyarn.recurrent_core.errors import InvalidInput
from longyarn.training.batches import BatchSampler, RecallBatches
from longyarn.training.evaluation import bits_per_byte, document_stream, mean_loss, sample_text
from longyarn.training.tokenizer_training import (
    DEFAULT_EVAL_BYTES_PER_BOOK,
    END_OF_TEXT,
    compression_baselines,
    split_heldout_text,
)
from longyarn.training.training_model import RWKV7, blinkdl_config

# ----------------------------------------------------------------------------------------------
# Knobs. Every field is also a command-line flag (--n-layer, --time-budget-s, ...); a preset
# fills them first, and flags given on the command line win.


@dataclass
class TrainConfig:
    data: str = ".device/data"
    out: str = "demo_model"
    # model
    n_layer: int = 6
    n_embd: int = 384
    head_size: int = 64
    # batches and optimiser
    ctx_len: int = 512
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    # recall episodes (recall_episodes.py), read beside the book windows at every step
    recall_rows: int = 0  # rows of packed episodes a step; 0: books alone
    recall_ctx_len: int = 2048
    recall_answer_weight: float = 1.0  # loss weight of answer tokens (other tokens weigh 1)
    # when to stop
    time_budget_s: float = 390.0
    max_steps: int = 0  # 0: plan the steps from the time budget
    calibration_steps: int = 30  # steps timed before planning (warm-up ones excluded)
    # run
    init_from: str = ""  # a longyarn model directory to start from (same shape); "": random weights
    seed: int = 1234
    device: str = "cuda"
    bf16: bool = True  # bf16 autocast on CUDA; the state recurrence stays in float32
    compile: bool = False
    threads: int = 0  # CPU threads for torch; 0 leaves torch's default
    log_interval: int = 50
    val_interval: int = 250
    val_windows: int = 32
    # evaluation and sample
    eval_bytes_per_book: int = DEFAULT_EVAL_BYTES_PER_BOOK
    eval_streams: int = 16
    sample_prompt: str = "Once upon a time, in a little house at the edge of a great forest,"
    sample_tokens: int = 160
    max_shard_bytes: int = 15_000_000  # each weight file stays under 16 MB (and 16 MiB)


# Earlier weights replace the final ones only if the final validation loss is this much worse.
VALIDATION_MARGIN = 0.005

PRESETS: dict[str, dict[str, Any]] = {
    # About 14.5M parameters (29 MB in bf16), for an H100 and ~6.5 minutes: books in 1,024-token
    # windows and a third of the tokens in recall episodes.
    "gpu": dict(n_layer=6, n_embd=384, head_size=64, ctx_len=1024, batch_size=16, lr=1e-3,
                warmup_steps=100, time_budget_s=390.0, device="cuda", log_interval=50,
                val_interval=250, recall_rows=4, recall_ctx_len=2048, recall_answer_weight=8.0),
    # The bundled demo model: about 2M parameters, within an hour on two CPU cores. Books in
    # 1,024-token windows, and a third of the tokens in 2,048-token rows of recall episodes.
    "cpu": dict(n_layer=4, n_embd=128, head_size=32, ctx_len=1024, batch_size=4, lr=2e-3,
                warmup_steps=50, time_budget_s=3300.0, device="cpu", bf16=False, log_interval=20,
                val_interval=200, val_windows=16, eval_bytes_per_book=65_536, eval_streams=8,
                sample_tokens=120, recall_rows=1, recall_ctx_len=2048, recall_answer_weight=8.0),
}


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """TrainConfig from a preset and command-line flags (flags win)."""
    parser = argparse.ArgumentParser(
        prog="python -m longyarn.training.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float, "str": str}[field.type]
            parser.add_argument(flag, type=kind, default=None, metavar=field.name.upper())
    args = vars(parser.parse_args(argv))
    preset = PRESETS.get(args.pop("preset") or "", {})
    given = {name: value for name, value in args.items() if value is not None}
    return TrainConfig(**{**preset, **given})


# ----------------------------------------------------------------------------------------------
# Data


@dataclass
class PreparedData:
    train_tokens: np.ndarray  # uint16, books separated by END_OF_TEXT
    tokenizer: Any  # tokenizers.Tokenizer
    tokenizer_path: Path
    meta: dict
    eval_texts: list[str]  # the held-out books' opening slices (reported figures)
    validation_texts: list[str]  # the rest of the held-out books (watched during training)


def load_prepared_data(data_dir: Path, eval_bytes_per_book: int) -> PreparedData:
    """Read what `tokenizer_training` wrote; raise InvalidInput if the folder is incomplete."""
    from tokenizers import Tokenizer

    needed = [data_dir / "tokenizer.json", data_dir / "train.npy", data_dir / "meta.json"]
    missing = [path.name for path in needed if not path.is_file()]
    if missing:
        raise InvalidInput(
            f"{data_dir} lacks {', '.join(missing)}, so no training was started; prepare it with "
            f"`python -m longyarn.training.tokenizer_training --out {data_dir}`."
        )
    meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
    eval_texts, validation_texts = [], []
    for name in meta["heldout_books"]:
        text = (data_dir / "heldout" / name).read_text(encoding="utf-8")
        eval_slice, rest = split_heldout_text(text, eval_bytes_per_book)
        eval_texts.append(eval_slice)
        if rest:
            validation_texts.append(rest)
    return PreparedData(
        train_tokens=np.load(data_dir / "train.npy", mmap_mode="r"),
        tokenizer=Tokenizer.from_file(str(data_dir / "tokenizer.json")),
        tokenizer_path=data_dir / "tokenizer.json",
        meta=meta,
        eval_texts=eval_texts,
        validation_texts=validation_texts,
    )


# ----------------------------------------------------------------------------------------------
# Schedule


def learning_rate(step: int, total_steps: int | None, config: TrainConfig) -> float:
    """Linear warm-up, then a cosine from lr to lr * min_lr_ratio at total_steps.

    Before the total is known (while the first steps are timed) only the warm-up applies;
    calibration_steps < warmup_steps keeps that part of the schedule independent of the total.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if total_steps is None:
        return config.lr
    progress = min(1.0, (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps))
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def plan_total_steps(steps_done: int, seconds_per_step: float, seconds_left: float) -> int:
    """How many steps fit in the budget, keeping 5% in hand for validation and slower steps."""
    return steps_done + max(1, int(0.95 * seconds_left / seconds_per_step))


# ----------------------------------------------------------------------------------------------
# Training


class Validation:
    """Watches the validation loss (held-out books past their evaluation slices) during training.

    It keeps a copy of the best weights seen, so a run that overfits can ship its best point
    instead of its last; the reported figures come from the evaluation slices, never from here.
    """

    def __init__(self, data: PreparedData, config: TrainConfig, autocast):
        self.batch_size, self.autocast = config.batch_size, autocast
        self.windows: torch.Tensor | None = None
        self.best_loss, self.best_step, self.best_weights = math.inf, None, None
        if not data.validation_texts:
            return
        stream = document_stream(data.tokenizer, data.validation_texts)
        usable = (stream.numel() - 1) // config.ctx_len
        if usable < 1:
            return
        picks = np.linspace(0, usable - 1, num=min(config.val_windows, usable)).astype(int)
        windows = [stream[i * config.ctx_len : (i + 1) * config.ctx_len + 1] for i in picks]
        self.windows = torch.stack(windows).to(config.device)

    def check(self, forward, model: RWKV7, step: int) -> float | None:
        """The validation loss now (None without validation text); remembers the best weights."""
        if self.windows is None:
            return None
        model.eval()
        loss = mean_loss(forward, self.windows, self.batch_size, self.autocast)
        model.train()
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, step
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return loss

    def restore_if_better(self, model: RWKV7, final_loss: float | None, step: int) -> int:
        """Load the best weights if the final ones are clearly worse; return the step kept."""
        if final_loss is None or self.best_weights is None:
            return step
        if final_loss <= self.best_loss * (1 + VALIDATION_MARGIN):
            return step  # annealed final weights are preferred unless training overfit
        model.load_state_dict(self.best_weights)
        return self.best_step


def with_recall_rows(forward, autocast, recall: RecallBatches, book_loss: torch.Tensor, book_tokens: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The step's loss over the book windows and a batch of recall rows together (each token
    by its weight), and how many answers the model began right (their first token), of how many."""
    inputs, targets, weights, answers = recall.next()
    with autocast():
        logits, _ = forward(inputs)
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
    total = book_loss * book_tokens + (nll * weights.flatten()).sum()
    first = answers.clone()
    first[:, 1:] &= ~answers[:, :-1]  # an answer's later tokens follow from its first
    right = ((logits.argmax(-1) == targets) & first).sum()
    return total / (book_tokens + weights.sum()), right, first.sum()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: RWKV7, config: TrainConfig, fused: bool) -> torch.optim.AdamW:
    decayed = model.decayed_parameter_names()
    groups = [
        {"params": [p for n, p in model.named_parameters() if n in decayed], "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if n not in decayed], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8,
                             fused=fused or None)


def log(message: str) -> None:
    print(message, flush=True)


def train(config: TrainConfig) -> dict[str, Any]:
    """Train, evaluate and save as `config` says; return what was written to eval.json."""
    started = time.perf_counter()
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(
            "--device cuda was asked for but no CUDA GPU is visible, so nothing was trained; "
            "pass --device cpu (or --preset cpu) to train on the CPU."
        )
    if not config.max_steps and config.calibration_steps > config.warmup_steps:
        raise InvalidInput(
            f"--calibration-steps ({config.calibration_steps}) exceeds --warmup-steps "
            f"({config.warmup_steps}), so the schedule would depend on timing; nothing was trained, "
            "so lower the first or raise the second."
        )
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    on_cuda = config.device.startswith("cuda")
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    use_bf16 = on_cuda and config.bf16

    def autocast():
        return torch.autocast(device_type="cuda" if on_cuda else "cpu", dtype=torch.bfloat16, enabled=use_bf16)

    data = load_prepared_data(Path(config.data), config.eval_bytes_per_book)
    out_dir = Path(config.out)
    seed_everything(config.seed)
    model_config = blinkdl_config(data.meta["vocab_size"], config.n_embd, config.n_layer, config.head_size)
    model = RWKV7(model_config).initialise(seed=config.seed)
    if config.init_from:
        model.load_state_dict(_weights_of(Path(config.init_from), model_config))
    model = model.to(config.device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {config.n_layer} layers x {config.n_embd} wide, heads of {config.head_size}, "
        f"vocab {model_config.vocab_size}: {n_params:,} parameters ({2 * n_params / 1e6:.1f} MB in bf16)")
    log(f"data: {data.train_tokens.size:,} training tokens; held out: {', '.join(data.meta['heldout_books'])}")

    sampler = BatchSampler(data.train_tokens, config.batch_size, config.ctx_len, config.seed, config.device)
    recall = None
    if config.recall_rows:
        recall = RecallBatches(data.train_tokens, data.tokenizer, data.tokenizer.token_to_id(END_OF_TEXT),
                               config.recall_rows, config.recall_ctx_len, config.seed,
                               config.recall_answer_weight, config.device)
        log(f"recall episodes: {config.recall_rows} x {config.recall_ctx_len} tokens a step, "
            f"answers weigh {config.recall_answer_weight}")
    optimizer = make_optimizer(model, config, fused=on_cuda)
    forward = torch.compile(model) if config.compile else model

    validation = Validation(data, config, autocast)
    total_steps = config.max_steps or None
    warm_up_steps = min(5, config.calibration_steps // 2)
    timing_start = None
    tokens_per_step = config.batch_size * config.ctx_len + (config.recall_rows * config.recall_ctx_len if recall else 0)
    train_start = time.perf_counter()
    log(f"training: {config.batch_size} x {config.ctx_len} tokens a step, lr {config.lr}, "
        f"budget {config.time_budget_s:.0f} s" + (f", {config.max_steps} steps" if config.max_steps else "")
        + f", seed {config.seed}, device {config.device}{' bf16' if use_bf16 else ''}")
    step, loss_sum, loss_count, last_log = 0, 0.0, 0, time.perf_counter()
    last_loss, loss_curve, recall_curve = math.nan, [], []
    answers_right, answers_seen = 0, 0
    model.train()
    while True:
        elapsed = time.perf_counter() - train_start
        if total_steps is not None and step >= total_steps:
            break
        if elapsed >= config.time_budget_s:
            log(f"time budget reached at step {step} ({elapsed:.0f} s)")
            break
        if total_steps is None and step == warm_up_steps:
            if on_cuda:
                torch.cuda.synchronize()
            timing_start = time.perf_counter()
        if total_steps is None and step == config.calibration_steps:
            if on_cuda:
                torch.cuda.synchronize()
            seconds_per_step = (time.perf_counter() - timing_start) / (step - warm_up_steps)
            seconds_left = config.time_budget_s - (time.perf_counter() - train_start)
            total_steps = plan_total_steps(step, seconds_per_step, seconds_left)
            log(f"planned {total_steps} steps ({seconds_per_step * 1000:.0f} ms a step)")

        lr = learning_rate(step, total_steps, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = sampler.next()
        with autocast():
            logits, _ = forward(inputs)
        loss = objective = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        if recall is not None:
            objective, right, seen = with_recall_rows(forward, autocast, recall, loss, targets.numel())
            answers_right, answers_seen = answers_right + right, answers_seen + seen
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        step += 1
        loss_sum += loss.detach()
        loss_count += 1

        if step % config.log_interval == 0 or step == total_steps:
            last_loss = float(loss_sum) / loss_count
            loss_curve.append([step, round(last_loss, 4)])
            now = time.perf_counter()
            tokens_per_s = loss_count * tokens_per_step / (now - last_log)
            recalled = ""
            if answers_seen:
                recall_curve.append([step, round(float(answers_right) / float(answers_seen), 4)])
                recalled = f"  answers {100 * recall_curve[-1][1]:.0f}% begun right"
            log(f"step {step:6d}{'/' + str(total_steps) if total_steps else ''}  loss {last_loss:.4f}{recalled}  "
                f"lr {lr:.2e}  {tokens_per_s:,.0f} tok/s  {now - train_start:.0f} s")
            loss_sum, loss_count, last_log, answers_right, answers_seen = 0.0, 0, now, 0, 0
        if config.val_interval and step % config.val_interval == 0 and validation.windows is not None:
            val = validation.check(forward, model, step)
            log(f"step {step:6d}  validation loss {val:.4f} (best {validation.best_loss:.4f} "
                f"at step {validation.best_step})")
    train_seconds = time.perf_counter() - train_start
    if loss_count:
        last_loss = float(loss_sum) / loss_count

    final_val = validation.check(forward, model, step)
    kept_step = validation.restore_if_better(model, final_val, step)
    if kept_step != step:
        log(f"kept the weights of step {kept_step} (validation {validation.best_loss:.4f} < final {final_val:.4f})")

    # The weights as they ship, rounded to bf16, are saved at once (so a failure later on
    # loses no training) and then evaluated.
    model.eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.to(torch.bfloat16).float())
    tokens_seen = step * tokens_per_step
    results: dict[str, Any] = {
        "heldout_books": data.meta["heldout_books"],
        "eval_bytes_per_book": config.eval_bytes_per_book,
        "final_train_loss": round(last_loss, 4),
        "validation_loss": None if final_val is None else round(min(validation.best_loss, final_val), 4),
        "steps": step,
        "kept_step": kept_step,
        "planned_steps": total_steps,
        "tokens_seen": tokens_seen,
        "epochs": round(step * config.batch_size * config.ctx_len / data.train_tokens.size, 2),  # of the books
        "train_seconds": round(train_seconds, 1),
        "parameters": n_params,
        "loss_curve": loss_curve,  # [step, mean training loss on the books since the previous entry]
        "recall_answer_curve": recall_curve,  # [step, share of recall answers begun right since then]
    }
    save_model(model, config, data, results, out_dir)

    heldout = bits_per_byte(model, data.tokenizer, data.eval_texts, config.ctx_len, config.eval_streams,
                            config.device, autocast)
    without_carry = bits_per_byte(model, data.tokenizer, data.eval_texts, config.ctx_len, config.eval_streams,
                                  config.device, autocast, carry_state=False)
    eval_text = "".join(data.eval_texts)
    baselines = compression_baselines(eval_text)
    precomputed = data.meta.get("eval_slice", {})
    if "zstd_19" not in baselines and precomputed.get("sha256") == _sha256(eval_text):
        baselines = {**precomputed["compression_bits_per_byte"], **baselines}
    log(f"held-out: {heldout['bits_per_byte']:.4f} bits/byte over {heldout['bytes']:,} bytes "
        f"({heldout['tokens']:,} tokens; {without_carry['bits_per_byte']:.4f} reading each {config.ctx_len}-token "
        "window afresh); " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(baselines.items())))
    results = {
        "heldout_bits_per_byte": round(heldout["bits_per_byte"], 4),
        "heldout_bits_per_byte_without_carry": round(without_carry["bits_per_byte"], 4),
        "heldout_nll_per_token": round(heldout["nll_per_token"], 4),
        "heldout_tokens": heldout["tokens"],
        "heldout_bytes": heldout["bytes"],
        "baselines_bits_per_byte": baselines,
        **results,
    }
    results["sample"] = sample_text(model, data.tokenizer, config.sample_prompt, config.sample_tokens,
                                    config.device, config.seed)
    log("sample:\n" + results["sample"])
    save_model(model, config, data, results, out_dir)
    log(f"saved {out_dir} ({_directory_bytes(out_dir) / 1e6:.1f} MB) in {time.perf_counter() - started:.0f} s")
    return results


def _weights_of(model_dir: Path, model_config) -> dict[str, torch.Tensor]:
    """The float32 weights of a longyarn model directory of `model_config`'s shape."""
    from longyarn.recurrent_core.local_lm.checkpoint import load_checkpoint

    loaded = load_checkpoint(model_dir)
    if loaded.config != model_config:
        raise InvalidInput(
            f"--init-from {model_dir} holds a model of another shape ({loaded.config}), so nothing was "
            "trained; pass a model of the shape asked for, or leave --init-from out."
        )
    return {name: tensor.float() for name, tensor in loaded.state_dict.items()}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _directory_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir() if path.is_file())


def save_model(model: RWKV7, config: TrainConfig, data: PreparedData, results: dict, out_dir: Path) -> None:
    """Write the longyarn model directory (bf16 weights, config, tokenizer) and eval.json."""
    from longyarn.recurrent_core.local_lm.checkpoint import save_own_format

    weights = {name: tensor.detach().to("cpu", torch.bfloat16) for name, tensor in model.state_dict().items()}
    training = {
        key: results.get(key)
        for key in ("steps", "kept_step", "planned_steps", "tokens_seen", "epochs", "train_seconds",
                    "heldout_bits_per_byte", "heldout_books", "baselines_bits_per_byte")
    }
    training.update(
        seed=config.seed, device=config.device, bf16=config.bf16 and config.device.startswith("cuda"),
        batch_size=config.batch_size, lr=config.lr, min_lr_ratio=config.min_lr_ratio,
        warmup_steps=config.warmup_steps, weight_decay=config.weight_decay,
        time_budget_s=config.time_budget_s, max_steps=config.max_steps,
        tokenizer_sha256=data.meta.get("tokenizer_sha256"), torch=torch.__version__,
        config=dataclasses.asdict(config),
    )
    extra = {
        "version": 1, "ctx_len": config.ctx_len, "end_of_text_token": END_OF_TEXT,
        "prose_only": True,  # books alone: it continues prose but cannot summarise or plan
        "training": training,
    }
    save_own_format(weights, extra, data.tokenizer_path, out_dir, max_shard_bytes=config.max_shard_bytes)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
