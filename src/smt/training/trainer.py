"""The training loop: batches -> loss -> AdamW step, with evaluation, logs and checkpoints.

Loss is next-token cross-entropy summed over the real targets of all micro-batches and ranks of
a step and divided by their count, so gradient accumulation and K processes give the gradient of
one process on the same global batch (padding in stream mode included).

What an experiment needs beyond that comes in as options, not as a loop of its own: callbacks
(smt.training.callbacks: the fresh model, every step's loss, gradient norm and model outputs) and
the optimizer (`optimizer_factory`, default smt.training.optimizer.build_optimizer).
"""

from __future__ import annotations

import hashlib
import math
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from smt.config import ConfigError, TrainingConfig
from smt.errors import writing_under
from smt.training.batching import (
    Batch,
    RandomWindowBatcher,
    StreamingBatcher,
    TokenView,
    as_view,
    eval_batch_count,
    eval_batches,
)
from smt.training.callbacks import StepInfo, detached
from smt.training.checkpoint import (
    CheckpointError,
    CheckpointPayload,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
    step_dir_name,
)
from smt.training.data_setup import check_vocab
from smt.training.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    no_sync,
    setup_distributed,
    stop_roll_call,
    teardown_distributed,
    unwrap,
    wrap_model,
)
from smt.training.first_step import first_step_cause
from smt.training.host_memory import keep_freed_memory
from smt.training.logging import MetricsLogger, plot_loss_curve
from smt.training.memory_estimate import check_training_memory
from smt.training.model_factory import build_model
from smt.training.optimizer import build_optimizer
from smt.training.run_config import FullConfig
from smt.training.run_directory import check_run_dir, claim_run_dir
from smt.training.schedule import build_scheduler, warmup_warning
from smt.training.stop_signals import StopOnSignal, TrainingInterrupted

# settings a resumed run must share with the checkpoint (the data position depends on them)
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}  # training.dtype -> autocast
RESUME_MUST_MATCH = ("batch_size", "gradient_accumulation_steps", "seq_len", "batching", "seed", "data_seed")
TIMED_STEPS = 3  # the time estimate: the mean of the steps after the first (which warms up)
# the logging window: what the next train record averages over (saved in checkpoints: a resume
# in the middle of a window must log the same record as the uninterrupted run)
EMPTY_WINDOW = {"nll": 0.0, "count": 0, "tokens": 0, "time": 0.0}


class NonFiniteError(RuntimeError):
    """A NaN/inf loss or gradient with training.nonfinite='stop'."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    losses: dict[int, float] = field(default_factory=dict)  # step -> train loss of that step
    final_eval: dict | None = None
    skipped_steps: list[int] = field(default_factory=list)
    wall_s: float = 0.0
    tokens_per_s: float = 0.0
    last_checkpoint: Path | None = None


@dataclass
class _RunState:
    """What one training run carries from step to step (built by Trainer._setup)."""

    model: nn.Module
    wrapped: nn.Module  # the model as DDP / FSDP wrap it (the model itself on one process)
    forward: Any  # wrapped, or torch.compile(wrapped)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batcher: Any
    stream_state: Any
    logger: MetricsLogger | None
    bar: Any
    result: TrainResult
    total_steps: int
    step: int
    last_checkpoint: Path | None
    params: list[Tensor]
    started: float
    scaler: Any = None  # torch.amp.GradScaler: enabled for training.dtype float16, a pass-through otherwise
    tokens_total: int = 0
    last_eval: dict | None = None
    window: dict = field(default_factory=lambda: dict(EMPTY_WINDOW))
    elapsed_before: float = 0.0  # training seconds of the run before this process resumed it
    tokens_before: int = 0  # tokens_total when this process resumed the run
    step_seconds: list = field(default_factory=list)  # the first steps' durations, for the time estimate



OptimizerFactory = Callable[[nn.Module, TrainingConfig], torch.optim.Optimizer]


class Trainer:
    """Train `config.model` on token views (TokenDataset-like objects); see smt.training.

    `callbacks`: objects with on_model / on_step (smt.training.callbacks), called on every process.
    `optimizer_factory(model, training_config)`: the optimizer (default: build_optimizer, AdamW with
    decay on matrices only); a resume must use the same kind, as its saved state must fit."""

    def __init__(self, config: FullConfig, train_data, valid_data=None, tokenizer: Any = None,
                 context: DistContext | None = None, callbacks: Sequence[Any] = (),
                 optimizer_factory: OptimizerFactory | None = None) -> None:
        self.config = config
        self.callbacks = list(callbacks)
        self.optimizer_factory = optimizer_factory or build_optimizer
        self._last_outputs: dict | None = None  # the model's aux of the latest training micro-batch (callbacks)
        self.tc, self.run = config.training, config.run
        self.train_view: TokenView = as_view(train_data, name="train data") if not isinstance(
            train_data, TokenView) else train_data
        self.valid_view: TokenView | None = None
        if valid_data is not None:
            self.valid_view = valid_data if isinstance(valid_data, TokenView) else as_view(
                valid_data, name="validation data")
        check_vocab(self.train_view, config.model, "the training data")
        if self.valid_view is not None:
            check_vocab(self.valid_view, config.model, "the validation data")
        if tokenizer is not None and getattr(tokenizer, "vocab_size", 0) > config.model.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is "
                             f"{config.model.vocab_size}; set model.vocab_size to {tokenizer.model_vocab_size}")
        if self.tc.batching == "stream" and config.model.has_memory and self.tc.seq_len % config.model.stride:
            raise ValueError(f"training.seq_len={self.tc.seq_len} must be a multiple of model.stride="
                             f"{config.model.stride} in stream batching (segments keep rows aligned to writes)")
        self.tokenizer = tokenizer
        self._words_are_prose: bool | None = None  # judged at the first validation
        self.context = context
        self.run_dir = Path(self.run.output_dir)
        self.checkpoint_root = self.run_dir / "checkpoints"

    # ----------------------------------------------------------------- set-up
    def _total_steps(self, world_size: int) -> int:
        tokens_per_step = self.tc.batch_size * world_size * self.tc.gradient_accumulation_steps * self.tc.seq_len
        steps = []
        if self.tc.max_steps is not None:
            steps.append(self.tc.max_steps)
        if self.tc.epochs is not None:
            steps.append(max(1, math.ceil(float(self.tc.epochs) * len(self.train_view) / tokens_per_step)))
        return min(steps)

    def _data_fingerprint(self) -> str:
        """The training tokens' identity: their count and a hash of their first and last 64K
        (cheap at any size; a moved copy of the same data keeps it)."""
        if getattr(self, "_fingerprint", None) is None:
            tokens = np.ascontiguousarray(self.train_view.tokens)
            digest = hashlib.sha256(str(len(tokens)).encode())
            digest.update(tokens[:65536].tobytes())
            digest.update(tokens[-65536:].tobytes())
            self._fingerprint = f"{len(tokens)} tokens, sha256 {digest.hexdigest()[:16]}"
        return self._fingerprint

    def _make_batcher(self, ctx: DistContext):
        kind = StreamingBatcher if self.tc.batching == "stream" else RandomWindowBatcher
        data_seed = self.tc.seed if self.tc.data_seed is None else self.tc.data_seed
        return kind(self.train_view, self.tc.batch_size, self.tc.seq_len, seed=data_seed,
                    rank=ctx.rank, world_size=ctx.world_size)

    def _resume_from(self, resume: bool | str | Path) -> Path:
        """The step directory to resume: the newest, or the one named (a name in checkpoints/ or a
        path), which must then be the newest left, so that a later --resume cannot go back to a
        newer (damaged or unwanted) one."""
        found = list_checkpoints(self.checkpoint_root)
        if resume is True:
            return found[-1]
        wanted = Path(resume)
        chosen = next((c for c in found if c.name == wanted.name
                       and (not wanted.parent.parts or c.resolve() == wanted.resolve())), None)
        if chosen is None:
            raise CheckpointError(f"--resume {resume}: not a checkpoint of this run; its checkpoints are "
                                  f"{[c.name for c in found]} in {self.checkpoint_root}")
        newer = [c.name for c in found if c.name > chosen.name]
        if newer:
            raise CheckpointError(f"--resume {chosen.name}: the run has newer checkpoints {newer}; move them out of "
                                  f"{self.checkpoint_root} first (a later --resume would pick them up again)")
        return chosen

    def _start_line(self, model: nn.Module, ctx: DistContext, total_steps: int) -> str:
        """What is about to train: size, device, dtype, tokens per step and the run's length."""
        tc = self.tc
        parameters = sum(p.numel() for p in model.parameters())
        tokens = tc.batch_size * tc.seq_len * tc.gradient_accumulation_steps * ctx.world_size
        dtype = f"{tc.dtype} autocast" if tc.dtype in AUTOCAST_DTYPES else tc.dtype
        processes = f"{ctx.world_size} process" + ("es" if ctx.world_size > 1 else "")
        return (f"training: {parameters:,} parameters ({parameters / 1e6:.1f}M, {self.config.model.arch}), device "
                f"{ctx.device}, {dtype}, {tokens:,} tokens per step (batch {tc.batch_size} x seq_len {tc.seq_len} x "
                f"accumulation {tc.gradient_accumulation_steps} x {processes}), {total_steps} steps")

    def _check_resumable(self, record: dict, directory: Path, ctx: DistContext) -> None:
        saved_model = record.get("config", {}).get("model")
        here = self.config.model.to_dict()
        if saved_model is not None:
            ignore = {"device", "dtype", "use_cuda_kernels", "attention_impl"}
            diff = sorted(k for k in here if k not in ignore and saved_model.get(k) != here[k])
            if diff:
                details = ", ".join(f"{k}: checkpoint {saved_model.get(k)!r} vs config {here[k]!r}" for k in diff[:6])
                raise CheckpointError(f"{directory} was written by a run with a different model config "
                                      f"({details}); resume with the same model settings or start a new output_dir")
        saved_training = record.get("config", {}).get("training", {})
        diff = [k for k in RESUME_MUST_MATCH if saved_training.get(k) != getattr(self.tc, k)]
        if diff:
            details = ", ".join(f"{k}: checkpoint {saved_training.get(k)!r} vs config {getattr(self.tc, k)!r}"
                                for k in diff)
            raise CheckpointError(f"{directory}: cannot continue its data stream with different settings ({details})")
        if self.tc.batching == "stream" and record.get("world_size") != ctx.world_size \
                and record.get("world_size") is not None and saved_training.get("batch_size") is not None:
            rows = record["world_size"] * saved_training["batch_size"]
            if rows != ctx.world_size * self.tc.batch_size:
                raise CheckpointError(f"{directory}: {rows} stream rows were saved but this launch has "
                                      f"{ctx.world_size * self.tc.batch_size}; use the same number of processes")
        saved_data = record.get("train_data_fingerprint")
        if saved_data is not None and saved_data != self._data_fingerprint():
            saved_source = record.get("config", {}).get("run", {}).get("train_data")
            raise CheckpointError(f"{directory} was trained on other data (run.train_data {saved_source!r}, "
                                  f"{saved_data}) than this run reads ({self.run.train_data!r}, "
                                  f"{self._data_fingerprint()}); resume with the same training data, or start a "
                                  "new run (another output_dir, or --overwrite)")
        fingerprint = record.get("tokenizer_fingerprint")
        if fingerprint and self.tokenizer is not None and hasattr(self.tokenizer, "fingerprint") \
                and self.tokenizer.fingerprint() != fingerprint:
            raise CheckpointError(f"{directory} was trained with a different tokenizer (fingerprint "
                                  f"{fingerprint} vs {self.tokenizer.fingerprint()}); use the run's tokenizer")

    def _check_length(self, start_step: int, total_steps: int, chosen: Path, ctx: DistContext) -> None:
        """A resume past the run's end is an error, one at its end a note: neither trains a step."""
        length = (f"training.max_steps={self.tc.max_steps}" if self.tc.max_steps == total_steps
                  else f"training.epochs={self.tc.epochs} ({total_steps} steps)")
        if start_step > total_steps:
            raise ConfigError(f"--resume: {chosen.name} is at step {start_step}, past the run's end ({length}); "
                              f"nothing would be trained. Set --max_steps above {start_step} to train on, or "
                              "resume an older checkpoint (--resume step_NNNNNN)")
        if start_step == total_steps and ctx.is_main:
            tqdm.write(f"note: --resume: {chosen.name} is already at the run's end ({length}); nothing to train. "
                       f"Set --max_steps above {start_step} to train on", file=sys.stderr)

    # ------------------------------------------------------------------ train
    def train(self, resume: bool | str | Path = False, stop_after: int | None = None,
              overwrite: bool = False) -> TrainResult:
        """Train to the configured number of steps (from the latest checkpoint when `resume` is True,
        from the named step directory when it is a name or path).
        `stop_after` ends the run after that step as if it were interrupted there (time-limited
        jobs; the resume tests); the schedule still spans the full run. A run directory that
        already holds a run needs `resume` or `overwrite` (smt.training.run_directory); it is
        locked while the training runs."""
        ctx = self.context or setup_distributed(self.tc.device, self.run.dist_timeout_s)
        try:
            warning = check_training_memory(self.config.model, self.tc, ctx.device)  # before anything is written
            if warning and ctx.is_main:
                print(warning, file=sys.stderr)
            with writing_under(self.run_dir):
                if not ctx.is_main:
                    check_run_dir(self.run_dir, resume, overwrite)
                    return self._train(ctx, resume, stop_after)
                with claim_run_dir(self.run_dir, resume, overwrite):
                    return self._train(ctx, resume, stop_after)
        finally:
            if self.context is None:
                teardown_distributed(ctx)

    def _train(self, ctx: DistContext, resume: bool | str | Path, stop_after: int | None) -> TrainResult:
        run = self._setup(ctx, resume)
        end_step = run.total_steps if stop_after is None else min(run.total_steps, stop_after)
        # a stop asked by a signal goes on only while every rank takes part (stop_signals: the roll call)
        with stop_roll_call(ctx, self.run.stop_handshake_s) as roll_call, \
                StopOnSignal(self.run.stop_grace_s, roll_call) as stop:
            while run.step < end_step:
                step_started = time.perf_counter()
                outcome = self._step(run, ctx)
                if outcome is None:  # a non-finite step, skipped by training.nonfinite='skip'
                    continue
                self._time_steps(run, ctx, time.perf_counter() - step_started)
                loss, grad_norm, lr = outcome
                self._log(run, loss, grad_norm, lr)
                self._call_back("on_step", StepInfo(run.step, loss, grad_norm, lr, self._last_outputs or {}))
                final = run.step == run.total_steps
                self._evaluate_if_due(run, ctx, final)
                if run.step % self.tc.checkpoint_interval == 0 or final:
                    self._save_step(run, ctx)
                self._stop_if_signalled(run, ctx, stop)
        return self._finish(run)

    def _setup(self, ctx: DistContext, resume: bool | str | Path) -> _RunState:
        """Model, optimizer, schedule, data position and carried state: fresh or from a checkpoint."""
        tc = self.tc
        barrier(ctx)
        if ctx.device.type == "cpu" and self.run.keep_freed_memory:
            keep_freed_memory()
        torch.manual_seed(tc.seed)
        random.seed(tc.seed)
        model = build_model(self.config.model, self.run.init_from).to(ctx.device)
        if not resume:
            self._call_back("on_model", model)
        total_steps = self._total_steps(ctx.world_size)
        if ctx.is_main:
            print(self._start_line(model, ctx, total_steps), file=sys.stderr)
        warning = warmup_warning(tc.warmup_steps, total_steps)
        if warning and ctx.is_main:
            print(warning, file=sys.stderr)
        batcher = self._make_batcher(ctx)
        start_step, loaded = 0, None
        if resume:
            chosen = self._resume_from(resume)
            loaded = load_checkpoint(chosen, model)
            self._check_resumable(loaded.training_state, chosen, ctx)
            start_step = int(loaded.training_state["step"])
            self._check_length(start_step, total_steps, chosen, ctx)
            batcher.load_state_dict(loaded.training_state["data_position"])
        finished = loaded is not None and start_step == total_steps  # nothing to train: the run stays as it was
        if ctx.is_main and not finished:
            self.config.to_yaml(self.run_dir / "config.yaml")
        wrapped = wrap_model(model, ctx, self.run.parallel)
        optimizer = self.optimizer_factory(wrapped, tc)
        scheduler = build_scheduler(optimizer, tc.warmup_steps, total_steps, float(tc.min_lr_ratio))
        stream_state = None
        if loaded is not None:
            self._restore_optimizer(wrapped, optimizer, scheduler, loaded.optimizer_state)
            length_note = _apply_hyperparameters(optimizer, scheduler, tc, total_steps, chosen)
            if ctx.is_main and not finished:
                _note_changed_settings(loaded.training_state, self.config, chosen, start_step)
                if length_note:
                    tqdm.write(length_note, file=sys.stderr)
            if loaded.stream_state is not None:
                from smt.models.components.stream_state import StreamState

                rows = slice(ctx.rank * tc.batch_size, (ctx.rank + 1) * tc.batch_size)
                full = StreamState.from_state_dict(loaded.stream_state)
                stream_state = full.select(torch.arange(rows.start, rows.stop)).to(ctx.device)
        if stream_state is None and tc.batching == "stream":
            stream_state = model.init_state(tc.batch_size)
        # float16 needs loss scaling (its range underflows small gradients); bfloat16 and float32 do not
        scaler = torch.amp.GradScaler(ctx.device.type, enabled=tc.dtype == "float16")
        if loaded is not None and loaded.optimizer_state.get("grad_scaler"):
            scaler.load_state_dict(loaded.optimizer_state["grad_scaler"])
        restored = None if loaded is None else _parse_trainer_state(loaded.training_state.get("trainer"),
                                                                    loaded.directory)  # before metrics are rewritten
        logger = MetricsLogger(self.run_dir, start_step if resume else None, self.run.trackers,
                               self.config.to_dict()) if ctx.is_main else None
        bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                   disable=not (self.run.progress and ctx.is_main), dynamic_ncols=True)
        run = _RunState(
            model=model, wrapped=wrapped, forward=torch.compile(wrapped) if tc.compile else wrapped,
            optimizer=optimizer, scheduler=scheduler, batcher=batcher, stream_state=stream_state, logger=logger,
            bar=bar, result=TrainResult(self.run_dir, total_steps), total_steps=total_steps, step=start_step,
            last_checkpoint=loaded.directory if loaded is not None else None,
            params=[p for p in wrapped.parameters() if p.requires_grad], started=time.perf_counter(), scaler=scaler)
        if restored is not None:
            _restore_trainer_state(run, restored)
        return run

    def _step(self, run: _RunState, ctx: DistContext) -> tuple[float, float, float] | None:
        """One optimizer step over gradient_accumulation_steps micro-batches: (loss, grad norm, lr),
        or None when the step was non-finite and skipped."""
        tc = self.tc
        step_started = time.perf_counter()
        batches = [run.batcher.next_batch().to(ctx.device) for _ in range(tc.gradient_accumulation_steps)]
        local_count = sum(b.n_targets for b in batches)
        global_count = int(all_reduce_sum(torch.tensor([float(local_count)], device=ctx.device), ctx).item())
        run.wrapped.train()
        nll_total = torch.zeros((), device=ctx.device)
        for index, batch in enumerate(batches):
            last = index == len(batches) - 1
            with no_sync(run.wrapped, skip_sync=not last):
                nll, auxiliary, run.stream_state = self._forward(run.forward, batch, run.stream_state)
                # sum / global count, times world size because DDP averages gradients over ranks; an
                # auxiliary loss (a per-token mean) is weighted by the micro-batch's share of the targets
                objective = nll if auxiliary is None else nll + auxiliary * batch.n_targets
                run.scaler.scale(objective * ctx.world_size / max(global_count, 1)).backward()
            nll_total += nll.detach()
        loss = float(all_reduce_sum(nll_total.reshape(1), ctx).item()) / max(global_count, 1)
        run.scaler.unscale_(run.optimizer)
        grad_norm = self._clip(run.params, ctx)
        run.step += 1
        # float16: an overflowing gradient is the loss scale's business (the scaler skips the update
        # and lowers the scale); a non-finite loss, or any non-finite gradient otherwise, is not
        overflow = run.scaler.is_enabled() and math.isfinite(loss)
        if not (math.isfinite(loss) and (math.isfinite(grad_norm) or overflow)):
            self._nonfinite(run, loss, grad_norm)
            return None
        lr = run.optimizer.param_groups[0]["lr"]
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        run.result.losses[run.step] = loss
        run.tokens_total += global_count
        window = run.window
        window["nll"] += loss * global_count
        window["count"] += global_count
        window["tokens"] += global_count
        window["time"] += time.perf_counter() - step_started
        return loss, grad_norm, lr

    def _time_steps(self, run: _RunState, ctx: DistContext, seconds: float) -> None:
        """After the first TIMED_STEPS steps that follow this process's first one (which pays for
        warming up), print the time per step and an estimate of the time to the run's end."""
        run.step_seconds.append(seconds)
        if len(run.step_seconds) != TIMED_STEPS + 1 or not ctx.is_main or run.step >= run.total_steps:
            return
        per_step = sum(run.step_seconds[1:]) / TIMED_STEPS
        left = run.total_steps - run.step
        tqdm.write(f"timing: {per_step:.3g} s per step (steps {run.step - TIMED_STEPS + 1}-{run.step}); {left} steps "
                   f"to go, about {_duration(per_step * left)} (evaluations and checkpoints come on top)",
                   file=sys.stderr)

    def _nonfinite(self, run: _RunState, loss: float, grad_norm: float) -> None:
        """training.nonfinite: 'stop' raises NonFiniteError; 'skip' drops the step's update and
        resets the carried state of rows that went non-finite."""
        message = (f"non-finite {'loss' if not math.isfinite(loss) else 'gradient'} at step {run.step} "
                   f"(loss={loss}, grad_norm={grad_norm})")
        if self.tc.nonfinite == "stop":
            run.bar.close()
            kept = (f"the last good checkpoint is {run.last_checkpoint}" if run.last_checkpoint
                    else "no checkpoint was written yet")
            if run.step == 1:  # nothing was updated yet: the cause is the model or the data
                raise NonFiniteError(f"{message}, {first_step_cause(run.model, self.config.model)}; "
                                     f"stopping (training.nonfinite='stop'); {kept}")
            raise NonFiniteError(f"{message}; stopping (training.nonfinite='stop'); {kept}. "
                                 "Lower the learning rate or use training.nonfinite='skip'")
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
        run.stream_state = _reset_nonfinite_rows(run.stream_state)
        run.result.skipped_steps.append(run.step)
        tqdm.write(f"warning: {message}; step skipped (training.nonfinite='skip')", file=sys.stderr)

    def _log(self, run: _RunState, loss: float, grad_norm: float, lr: float) -> None:
        """The progress bar every step; a train record every log_interval steps."""
        run.bar.update(1)
        run.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")
        if run.step % self.tc.log_interval and run.step != run.total_steps:
            return
        window = run.window
        mean = window["nll"] / max(window["count"], 1)
        record = {"step": run.step, "split": "train", "loss": mean, "ppl": _ppl(mean),
                  "tokens_per_s": window["tokens"] / max(window["time"], 1e-9), "lr": lr,
                  "grad_norm": grad_norm, "tokens_seen": run.tokens_total,
                  "elapsed_s": _elapsed(run), "peak_rss_mib": _peak_rss_mib()}
        if run.logger:
            run.logger.log(record)
        run.window = dict(EMPTY_WINDOW)

    def _evaluate_if_due(self, run: _RunState, ctx: DistContext, final: bool) -> None:
        if self.valid_view is None or not (run.step % self.tc.eval_interval == 0 or final):
            return
        full = final and self.run.full_final_eval
        run.last_eval = self.evaluate(run.wrapped, ctx, None if full else self.tc.eval_batches)
        run.last_eval.update(step=run.step, split="valid", elapsed_s=_elapsed(run))
        if run.logger:
            run.logger.log(run.last_eval)
            word = f" word ppl {run.last_eval['word_ppl']:.2f}" if run.last_eval.get("word_ppl") else ""
            tqdm.write(f"step {run.step}: valid loss {run.last_eval['loss']:.4f} ppl {run.last_eval['ppl']:.2f}{word}")

    def _save_step(self, run: _RunState, ctx: DistContext) -> None:
        last_eval = run.last_eval
        val_loss = last_eval["loss"] if last_eval and last_eval["step"] == run.step else None
        run.last_checkpoint = self._save(run.model, run.wrapped, run.optimizer, run.scheduler, run.scaler, run.batcher,
                                         run.stream_state, run.step, val_loss, ctx, _trainer_state(run))

    def _stop_if_signalled(self, run: _RunState, ctx: DistContext, stop: StopOnSignal) -> None:
        """After Ctrl-C or SIGTERM: keep the step just finished in a checkpoint and stop."""
        requested = stop.requested
        if ctx.world_size > 1:  # every process stops at the same step when any of them got the signal
            flag = torch.tensor([1.0 if requested else 0.0], device=ctx.device)
            # every rank takes part in this all-reduce at every step, signalled or not (it used to be
            # skipped by a signalled rank, which then met its peers' all-reduce with other collectives)
            anyone = all_reduce_sum(flag, ctx).item() > 0
            requested = requested or ("SIGTERM" if anyone else None)
        if not requested:
            return
        stop.confirm(requested)  # every rank takes part, else this process ends here, writing nothing
        if run.last_checkpoint is None or run.last_checkpoint.name != step_dir_name(run.step):
            self._save_step(run, ctx)
        run.bar.close()
        if run.logger:
            run.logger.close()
        raise TrainingInterrupted(requested, run.step, run.last_checkpoint)

    def _finish(self, run: _RunState) -> TrainResult:
        run.bar.close()
        result = run.result
        result.wall_s = time.perf_counter() - run.started
        result.tokens_per_s = (run.tokens_total - run.tokens_before) / max(result.wall_s, 1e-9)
        result.final_eval = run.last_eval
        result.last_checkpoint = run.last_checkpoint
        if run.logger:
            plot_loss_curve(run.logger.records, self.run_dir / "loss_curve.png")
            run.logger.close()
        return result

    # ------------------------------------------------------------- pieces
    def _call_back(self, hook: str, argument: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(argument)

    def _forward(self, model: nn.Module, batch: Batch, state):
        """Summed next-token NLL of one micro-batch, the model's auxiliary loss (None without one; it
        is optimised, not reported as the loss), and the carried state (stream mode)."""
        autocast = torch.autocast(device_type=batch.inputs.device.type, dtype=AUTOCAST_DTYPES.get(self.tc.dtype),
                                  enabled=self.tc.dtype in AUTOCAST_DTYPES)
        with autocast:
            if state is not None:
                state = state.reset_rows(batch.reset).detach()
                _, aux = model(batch.inputs, state=state, targets=batch.targets)
                state = aux["state"]
            else:
                _, aux = model(batch.inputs, targets=batch.targets)
        if self.callbacks and model.training:
            self._last_outputs = detached(aux)
        return aux["nll_sum"], aux.get("auxiliary_loss"), state

    def _clip(self, params: list[Tensor], ctx: DistContext) -> float:
        max_norm = float(self.tc.grad_clip) if float(self.tc.grad_clip) > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
        if hasattr(norm, "full_tensor"):  # FSDP: a sharded (DTensor) norm
            norm = norm.full_tensor()
        return float(norm)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, ctx: DistContext, max_batches: int | None) -> dict:
        """Validation loss/perplexity (token level; word level when the whole set was read and
        its word count is known)."""
        eval_model = model if self.run.parallel == "fsdp" and ctx.enabled else unwrap(model)
        was_training = eval_model.training
        eval_model.eval()
        mode = self.tc.batching
        state = unwrap(model).init_state(self.tc.batch_size) if mode == "stream" else None
        totals = torch.zeros(2, dtype=torch.float64, device=ctx.device)
        complete = True
        batches = eval_batches(self.valid_view, self.tc.batch_size, self.tc.seq_len, mode, ctx.rank, ctx.world_size)
        if max_batches is None and self.run.progress and ctx.is_main:  # the whole set: it can take a while
            batches = tqdm(batches, total=eval_batch_count(self.valid_view, self.tc.batch_size, self.tc.seq_len,
                                                           mode, ctx.world_size),
                           desc="final evaluation (whole validation set)", unit="batch", leave=False,
                           dynamic_ncols=True)
        for index, batch in enumerate(batches):
            if max_batches is not None and index >= max_batches:
                complete = False
                break
            nll, _, state = self._forward(eval_model, batch.to(ctx.device), state)
            totals += torch.stack([nll.double(), torch.tensor(float(batch.n_targets), dtype=torch.float64,
                                                              device=ctx.device)])
        eval_model.train(was_training)
        totals = all_reduce_sum(totals, ctx)
        loss = float(totals[0] / totals[1].clamp(min=1))
        record = {"loss": loss, "ppl": _ppl(loss), "tokens": int(totals[1]), "complete": complete}
        n_words = self.valid_view.n_words
        if complete and n_words and self._word_ppl_meaningful(ctx):
            record["word_ppl"] = _ppl(float(totals[0]) / n_words)
        return record

    def _word_ppl_meaningful(self, ctx: DistContext) -> bool:
        """Word perplexity on prose only (smt.evaluation.metrics.words_are_prose), judged once on a sample of
        the validation text; kept when there is no tokenizer to decode it with."""
        if self._words_are_prose is None:
            decode = getattr(self.tokenizer, "decode", None)
            if decode is None:
                self._words_are_prose = True
            else:
                from smt.evaluation.metrics import words_are_prose
                from smt.evaluation.streaming import sample_text

                self._words_are_prose, why = words_are_prose(sample_text(self.valid_view, decode))
                if not self._words_are_prose and ctx.is_main:
                    tqdm.write(f"no word perplexity for this validation text: {why}")
        return self._words_are_prose

    def _restore_optimizer(self, wrapped, optimizer, scheduler, state: dict) -> None:
        try:
            if self.run.parallel == "fsdp" and isinstance(state.get("optimizer"), dict) and state.get("fsdp"):
                from torch.distributed.checkpoint.state_dict import (
                    StateDictOptions,
                    set_optimizer_state_dict,
                )

                set_optimizer_state_dict(wrapped, optimizer, state["optimizer"],
                                         options=StateDictOptions(full_state_dict=True))
            else:
                optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        except (KeyError, ValueError, RuntimeError) as error:
            raise CheckpointError(f"the optimizer state in the checkpoint does not fit this model/optimizer: "
                                  f"{error}") from error
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available() and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(state["cuda_rng"])
        random.setstate(_python_rng_from(state["python_rng"]))

    def _save(self, model, wrapped, optimizer, scheduler, scaler, batcher, stream_state, step, val_loss, ctx,
              trainer_state: dict | None = None) -> Path:
        fsdp = self.run.parallel == "fsdp" and ctx.enabled
        if fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            full_weights = get_model_state_dict(wrapped, options=options)
            optimizer_state = get_optimizer_state_dict(wrapped, optimizer, options=options)
        else:
            optimizer_state = optimizer.state_dict()
        stream_tensors = None
        if stream_state is not None:
            stream_tensors = _gather_rows(stream_state.state_dict(), ctx)
        path = self.checkpoint_root / f"step_{step:06d}"
        if ctx.is_main:
            to_save = model
            if fsdp:
                to_save = build_model(self.config.model).cpu()
                to_save.load_state_dict(full_weights)
            payload = CheckpointPayload(
                step=step,
                training_state={
                    "data_position": batcher.state_dict(),
                    "config": self.config.to_dict(),
                    "world_size": ctx.world_size,
                    "tokenizer_fingerprint": (self.tokenizer.fingerprint() if hasattr(self.tokenizer, "fingerprint")
                                              else None),
                    "train_data_fingerprint": self._data_fingerprint(),
                    "trainer": trainer_state,
                },
                optimizer_state={
                    "optimizer": optimizer_state,
                    "fsdp": fsdp,
                    "scheduler": scheduler.state_dict(),
                    "grad_scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
                    "python_rng": _python_rng_to_plain(random.getstate()),
                },
                stream_state=stream_tensors,
            )
            path = save_checkpoint(self.checkpoint_root, to_save, payload, self.tokenizer,
                                   self.tc.keep_last_checkpoints, val_loss)
        barrier(ctx)
        return path


def _elapsed(run: _RunState) -> float:
    """Training seconds since the run began, the time before a resume included."""
    return run.elapsed_before + time.perf_counter() - run.started


def _trainer_state(run: _RunState) -> dict:
    """The trainer's own carried state (plain JSON): what the logged records and the result depend
    on besides the model, optimizer, RNG and data position."""
    return {"window": dict(run.window), "tokens_seen": run.tokens_total, "elapsed_s": _elapsed(run),
            "last_eval": run.last_eval, "skipped_steps": list(run.result.skipped_steps)}


def _parse_trainer_state(saved: Any, directory: Path) -> dict | None:
    """The trainer state of a checkpoint's training.json, typed; None for one written before it was
    saved (the run starts these afresh). A damaged one is refused, naming the file."""
    if not saved:
        return None
    try:
        return {"window": {key: type(value)(saved["window"][key]) for key, value in EMPTY_WINDOW.items()},
                "tokens_seen": int(saved["tokens_seen"]), "elapsed_s": float(saved["elapsed_s"]),
                "last_eval": saved.get("last_eval"),
                "skipped_steps": [int(step) for step in saved.get("skipped_steps", [])]}
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{directory / 'training.json'}: the trainer state is damaged ({type(error).__name__}: "
                              f"{error}); move {directory.name} away and resume from an earlier step") from error


def _restore_trainer_state(run: _RunState, saved: dict) -> None:
    """Continue the logging window, token count, clock and last evaluation of a checkpoint."""
    run.window = saved["window"]
    run.tokens_total = run.tokens_before = saved["tokens_seen"]
    run.elapsed_before = saved["elapsed_s"]
    run.last_eval = saved["last_eval"]
    run.result.skipped_steps = saved["skipped_steps"]


def _apply_hyperparameters(optimizer: torch.optim.Optimizer, scheduler: Any, tc: Any, total_steps: int,
                           checkpoint: Path | None = None) -> str | None:
    """Make the restored optimizer and schedule follow the config (a resume with --lr, --max_steps,
    --beta1 ... changes them from the resumed step on); values already equal are left untouched, so
    an unchanged resume stays bit for bit. A new run length stretches the rest of the decay from the
    resumed step (smt.training.schedule), so the lr goes on without a jump; returns a line saying so
    (None when the length is unchanged)."""
    schedule = {"warmup_steps": tc.warmup_steps, "total_steps": total_steps, "min_lr_ratio": float(tc.min_lr_ratio)}
    lr = float(tc.lr)
    step = scheduler.last_epoch
    length_note = None
    old_total = scheduler.lr_lambdas[0].total_steps
    if old_total != total_steps:
        before = float(scheduler.get_last_lr()[0])
        for function in scheduler.lr_lambdas:
            function.change_length(step, total_steps, tc.warmup_steps)
        length_note = (old_total, before)
    if any({k: vars(f).get(k) for k in schedule} != schedule for f in scheduler.lr_lambdas) \
            or any(b != lr for b in scheduler.base_lrs) or length_note:
        for function in scheduler.lr_lambdas:
            vars(function).update(schedule)
        scheduler.base_lrs = [lr] * len(optimizer.param_groups)
        for group, function in zip(optimizer.param_groups, scheduler.lr_lambdas):
            group["initial_lr"] = lr
            group["lr"] = lr * function(scheduler.last_epoch)
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    betas = (float(tc.beta1), float(tc.beta2))
    for index, group in enumerate(optimizer.param_groups):
        if tuple(group["betas"]) != betas:
            group["betas"] = betas
        if index == 0 and group["weight_decay"] != float(tc.weight_decay):  # group 1: never decayed
            group["weight_decay"] = float(tc.weight_decay)
    if length_note is None:
        return None
    old_total, before = length_note
    now, floor = scheduler.get_last_lr()[0], lr * float(tc.min_lr_ratio)
    function = scheduler.lr_lambdas[0]
    if function.anchor_step is None:
        how = f"the warm-up goes on and the cosine decay now ends at step {total_steps}"
    elif function.anchor_progress >= 1.0:
        how = (f"the run had already decayed to its floor, so steps {step + 1}-{total_steps} train at the floor lr "
               f"{floor:.3g} (lr x min_lr_ratio); for a fresh warm-up and decay, start a new run from the "
               f"checkpoint (--init_from {checkpoint or 'STEP_DIR'} --output_dir NEW_DIR)")
    else:
        how = (f"the rest of the cosine decay is stretched over steps {step + 1}-{total_steps}: the lr goes on from "
               f"{now:.3g} without a jump and reaches its floor {floor:.3g} at step {total_steps}")
    jump = f" (lr {before:.3g} -> {now:.3g}: other schedule settings changed too)" if not math.isclose(
        before, now, rel_tol=1e-9) else ""
    return (f"note: --resume at step {step}: the run's length changes from {old_total} to {total_steps} steps; "
            f"{how}{jump}")


def _note_changed_settings(record: dict, config: FullConfig, chosen: Path, step: int) -> None:
    """Name the settings that differ from the checkpoint's: they apply from the next step on."""
    saved = record.get("config", {})
    now = config.to_dict()
    changed = [f"{section}.{key} {saved[section][key]!r} -> {value!r}"
               for section in ("model", "training", "run") if isinstance(saved.get(section), dict)
               for key, value in now[section].items() if key in saved[section] and saved[section][key] != value]
    if changed:
        tqdm.write(f"note: resuming {chosen.name} with changed settings, which apply from step {step + 1} on "
                   f"(the learning-rate schedule follows the new values): {', '.join(changed)}", file=sys.stderr)


def _duration(seconds: float) -> str:
    """40 s, 12 min, 3 h 05 min."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _peak_rss_mib() -> float:
    """The process's peak resident memory so far (ru_maxrss is in kilobytes, in bytes on macOS)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _ppl(loss: float) -> float:
    return math.exp(min(loss, 80.0))


def _reset_nonfinite_rows(state):
    if state is None:
        return None
    bad = torch.zeros(state.batch_size, dtype=torch.bool, device=state.position.device)
    for value in state.buffers.values():
        if value.is_floating_point():
            bad |= ~torch.isfinite(value.reshape(value.shape[0], -1)).all(1)
    return state.reset_rows(bad) if bool(bad.any()) else state


def _gather_rows(tensors: dict[str, Tensor], ctx: DistContext) -> dict[str, Tensor]:
    """Concatenate every rank's rows (rank order), on rank 0."""
    local = {k: v.detach().cpu() for k, v in tensors.items()}
    if not ctx.enabled:
        return local
    import torch.distributed as dist

    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, local)
    return {k: torch.cat([g[k] for g in gathered], 0) for k in local}


def _python_rng_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from(plain: list) -> tuple:
    version, internal, gauss = plain
    return (int(version), tuple(int(x) for x in internal), gauss)

