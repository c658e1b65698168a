"""`smt eval --checkpoint DIR ...`: perplexity, loss by position, passkey and synthetic tasks.

    smt eval --checkpoint runs/x --data ../shared/data/wikitext/wiki.valid.tokens      streaming ppl
    smt eval --checkpoint runs/x --data DIR --positions 4096                           + loss-by-position PNG
    smt eval --checkpoint runs/x --data DIR --positions 1024 --recall-split 2          + loss by n-gram hit distance
    smt eval --checkpoint runs/x --passkey 256,512,1024 --depths 0,0.5,1               text passkey grid
    smt eval --checkpoint runs/x --task passkey                                        synthetic task
Results go to --out (default RUN_DIR/eval) as JSON (+ PNG) and are printed. eval.json keeps one entry per
kind of result (perplexity, loss_by_position, recall_split, passkey, task): a later evaluation replaces only the
kinds it computes, and each entry names its checkpoint, step and time (`evaluated`); every evaluation is also
appended whole to eval_history.jsonl, so nothing computed is lost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smt.model_directory import write_json_atomic


def add_parser(sub) -> None:
    parser = sub.add_parser("eval", help="evaluate a checkpoint: perplexity, loss by position, passkey, tasks",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="DIR", nargs="+",
                        help="run, checkpoints/, step or model directory; several to compare them (the same "
                             "evaluation on each, then one table and chart in --out)")
    parser.add_argument("--data", default=None, help="text file, directory or dataset name for perplexity")
    parser.add_argument("--split", default=None, help="split of --data (e.g. valid, test)")
    parser.add_argument("--segment-len", "--segment_len", type=int, default=512)
    parser.add_argument("--max-documents", "--max_documents", type=int, default=None)
    parser.add_argument("--word-ppl", "--word_ppl", choices=("auto", "always"), default="auto",
                        help="word perplexity: auto reports it on prose only (where nine in ten words are words "
                             "of letters: WikiText, books; not code), always on any text")
    parser.add_argument("--positions", type=int, default=None, metavar="P",
                        help="also the mean loss at positions 0..P-1 (PNG with the window marked)")
    parser.add_argument("--position-pieces", "--position_pieces", action="store_true",
                        help="for --positions: cut each document into streams of P+1 tokens (many "
                             "curves from a few long books) instead of reading each from its start only")
    parser.add_argument("--recall-split", "--recall_split", type=int, default=None, metavar="N",
                        help="also the loss split by associative-recall hits: tokens completing an N-gram seen "
                             "earlier in the document, by how far back (N = 2 for BPE, longer for bytes); on the "
                             "streams of --positions when given, else whole documents (recall_split.png)")
    parser.add_argument("--recall-edges", "--recall_edges", default=None, metavar="D1,D2,...",
                        type=_numbers(int, "--recall-edges", "32,192,512"),
                        help="hit-distance bucket edges in tokens (default: the model's window reach R, 4R, 16R)")
    parser.add_argument("--passkey", default=None, metavar="LENGTHS", type=_numbers(int, "--passkey", "256,512,1024"),
                        help="comma-separated context lengths for the text passkey grid")
    parser.add_argument("--depths", default=[0, 0.25, 0.5, 0.75, 1], type=_numbers(float, "--depths", "0,0.5,1"))
    parser.add_argument("--encoding", default="utf-8", help="encoding of --data text files and --filler (e.g. latin-1)")
    parser.add_argument("--text-field", "--text_field", default="text", help="the text field of .jsonl --data files")
    parser.add_argument("--samples", type=int, default=20, help="prompts per passkey cell / task samples")
    parser.add_argument("--filler", default=None, metavar="FILE", help="passkey filler text (default: grass/sky)")
    parser.add_argument("--task", default=None, help="synthetic task: passkey, mqar, selective_copy, "
                        "induction_heads, or a JSON mapping of fields")
    parser.add_argument("--out", default=None, help="output directory (default RUN_DIR/eval); with several "
                        "checkpoints, the comparison's (default ./compare; each run's results go to its RUN_DIR/eval)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def load_for_eval(path: str | Path, device: str = "cpu", prefer_best: bool = True):
    """(model in eval mode, tokenizer or None, directory) from any checkpoint/model directory (a run's
    best checkpoint when known and `prefer_best`, else its latest); the checksums are checked first."""
    from smt.models import load_model
    from smt.training.checkpoint import resolve_checkpoint

    directory = resolve_checkpoint(path, prefer_best)
    model = load_model(directory, device)
    tokenizer = None
    if (directory / "tokenizer.json").is_file():
        from smt.data import load_tokenizer

        tokenizer = load_tokenizer(directory / "tokenizer.json")
    return model, tokenizer, directory


HISTORY_FILE = "eval_history.jsonl"


def evaluation_stamp(directory: Path) -> dict:
    """Where a result comes from: the checkpoint, its training step (None for a model directory) and the
    time."""
    from datetime import datetime, timezone

    record = directory / "training.json"
    step = json.loads(record.read_text(encoding="utf-8")).get("step") if record.is_file() else None
    stamp = {"checkpoint": str(directory), "step": step,
             "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return stamp


def read_eval_file(path: Path) -> dict:
    """The results an earlier `smt eval` left in eval.json (empty when none or unreadable)."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        print(f"smt eval: {path} is unreadable; replacing it (earlier evaluations remain in {HISTORY_FILE})",
              file=sys.stderr)
        return {}
    return data


def default_out_dir(checkpoint: str | Path, name: str) -> Path:
    path = Path(checkpoint)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path
    return run_dir / name


def _task_from_args(text: str, checkpoint: str | Path):
    from smt.evaluation.tasks import TaskConfig

    if text.strip().startswith("{"):
        return TaskConfig.from_dict(json.loads(text))
    saved = default_out_dir(checkpoint, "task_eval.json")
    record = json.loads(saved.read_text(encoding="utf-8")) if saved.is_file() else {}
    if record.get("task_config", {}).get("name") == text:
        return TaskConfig.from_dict(record["task_config"])
    return TaskConfig.from_dict(text)


def _numbers(kind, flag: str, example: str):
    """An argparse type: comma-separated numbers, each positive for lengths (ints)."""
    def parse(text: str) -> list:
        try:
            values = [kind(x) for x in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} takes comma-separated numbers such as {example}, "
                                             f"got {text!r}") from None
        if kind is int and any(v < 1 for v in values):
            raise argparse.ArgumentTypeError(f"{flag} lengths must be >= 1, got {text!r}")
        return values
    return parse


def run(args: argparse.Namespace) -> int:
    if args.recall_split is not None and not args.data:
        raise ValueError("--recall-split splits the loss on text: pass --data PATH too")
    if not (args.data or args.passkey or args.task):
        raise ValueError("nothing to evaluate: pass --data PATH, --passkey LENGTHS and/or --task NAME")
    if len(args.checkpoint) == 1:
        checkpoint = args.checkpoint[0]
        results = evaluate_checkpoint(args, checkpoint, Path(args.out) if args.out else
                                      default_out_dir(checkpoint, "eval"))
        print(json.dumps(results, indent=2, default=str))
        return 0
    return _compare(args)


def _compare(args: argparse.Namespace) -> int:
    """The same evaluation on each checkpoint (kept in its own RUN_DIR/eval), then one table and chart."""
    from smt.evaluation.comparison import run_names, write_comparison

    results = {}
    for name, checkpoint in zip(run_names(args.checkpoint), args.checkpoint):
        print(f"smt eval: {name} ({checkpoint})", file=sys.stderr)
        results[name] = evaluate_checkpoint(args, checkpoint, default_out_dir(checkpoint, "eval"))
    markdown = write_comparison(results, Path(args.out or "compare"))
    print(markdown.read_text(encoding="utf-8"))
    print(f"comparison written to {markdown} (+ compare.json and the charts)", file=sys.stderr)
    return 0


def evaluate_checkpoint(args: argparse.Namespace, checkpoint: str, out: Path) -> dict:
    """Run the evaluations `args` asks for on one checkpoint; eval.json in `out` is updated after each
    (see the module docstring) and this evaluation's results are returned."""
    model, tokenizer, directory = load_for_eval(checkpoint, args.device)
    out.mkdir(parents=True, exist_ok=True)
    stamp = evaluation_stamp(directory)
    kept = read_eval_file(out / "eval.json")
    results: dict = {"checkpoint": str(directory), "arch": model.config.arch, "step": stamp["step"],
                     "parameters": sum(p.numel() for p in model.parameters())}

    def section(compute, **source) -> None:
        """Run one section and write eval.json right after it: an error in a later section keeps
        what the earlier ones computed."""
        new = {key: {**value, "evaluated": {**stamp, **source}} if isinstance(value, dict) else value
               for key, value in compute().items()}
        results.update(new)
        kept.update(results)
        write_json_atomic(out / "eval.json", json.loads(json.dumps(kept, default=str)))
        with open(out / HISTORY_FILE, "a", encoding="utf-8") as history:
            history.write(json.dumps({"checkpoint": results["checkpoint"], "arch": results["arch"], **new},
                                     default=str) + "\n")

    if args.data:
        section(lambda: _perplexity(args, model, tokenizer, out),
                data=str(args.data) + (f" ({args.split})" if args.split else ""))
    if args.passkey:
        section(lambda: {"passkey": _passkey(args, model, tokenizer, out)})
    if args.task:
        from smt.evaluation.tasks import evaluate_task

        task = _task_from_args(args.task, checkpoint)
        section(lambda: {"task": evaluate_task(model, task, n_samples=args.samples, seed=args.seed)})
    return results


def _perplexity(args, model, tokenizer, out: Path) -> dict:
    from smt.evaluation.streaming import evaluate_perplexity

    if tokenizer is None:
        raise FileNotFoundError("the checkpoint has no tokenizer.json; perplexity on text needs the model's tokenizer")
    from smt.data import build_token_dataset

    dataset = build_token_dataset(args.data, tokenizer, split=args.split, progress=False, encoding=args.encoding,
                                  text_field=args.text_field)
    result = {"perplexity": _word_ppl_where_meaningful(
        evaluate_perplexity(model, dataset, args.segment_len, args.max_documents, progress=True),
        dataset, tokenizer, args.word_ppl)}
    split = None
    if args.recall_split is not None:
        from smt.evaluation.recall_split import RecallSplit, default_edges

        split = RecallSplit(args.recall_split, args.recall_edges or default_edges(model.config.window_reach))
    if args.positions:
        import numpy as np

        from smt.evaluation.position_loss import loss_by_position, plot_loss_by_position

        curve, counts = loss_by_position(model, dataset, args.positions, args.segment_len, args.max_documents,
                                         pieces=args.position_pieces, progress=True,
                                         visit=None if split is None else split.add)
        np.save(out / "loss_by_position.npy", curve)
        cfg = model.config
        window = cfg.m_input_tokens if cfg.arch in ("smt", "swa") else None
        png = plot_loss_by_position({cfg.arch: curve}, out / "loss_by_position.png",
                                    window=window)
        result["loss_by_position"] = {"png": str(png), "streams_at_last_position": int(counts[-1]), "window": window,
                                      "npy": str(out / "loss_by_position.npy"),
                                      "mean_first_window": float(np.nanmean(curve[: cfg.m_input_tokens])),
                                      "mean_beyond_window": float(np.nanmean(curve[cfg.m_input_tokens:]))
                                      if args.positions > cfg.m_input_tokens else None}
    if split is not None:
        from smt.evaluation.recall_split import plot_recall_split, recall_split

        if args.positions:
            recall = split.result()
        else:
            recall = recall_split(model, dataset, split.n, split.edges, None, args.segment_len, args.max_documents,
                                  progress=True)
        recall["window_reach"] = model.config.window_reach
        recall["streams"] = (f"first {args.positions + 1} tokens of each document" if args.positions
                             else "whole documents")
        recall["png"] = str(plot_recall_split({model.config.arch: recall}, out / "recall_split.png"))
        result["recall_split"] = recall
    return result


def _word_ppl_where_meaningful(perplexity: dict, dataset, tokenizer, mode: str) -> dict:
    """Drop the word perplexity of text that is not prose (smt.evaluation.metrics.words_are_prose), saying why."""
    if "word_ppl" not in perplexity:
        return perplexity
    from smt.evaluation.metrics import words_are_prose
    from smt.evaluation.streaming import sample_text

    prose, why = words_are_prose(sample_text(dataset, tokenizer.decode))
    if prose or mode == "always":
        return {**perplexity, "word_ppl_note": why}
    print(f"smt eval: no word perplexity: {why} (--word-ppl always shows it)", file=sys.stderr)
    dropped = {k: v for k, v in perplexity.items() if k not in ("word_ppl", "n_words")}
    return {**dropped, "word_ppl_note": f"not reported: {why}"}


def _passkey(args, model, tokenizer, out: Path) -> dict:
    from smt.evaluation.passkey import (
        DEFAULT_FILLER,
        passkey_grid,
        plot_passkey_heatmap,
        text_passkey,
    )

    if tokenizer is None:
        raise FileNotFoundError("the checkpoint has no tokenizer.json; the text passkey needs the model's "
                                "tokenizer (use --task passkey for the token-id version)")
    filler = Path(args.filler).read_text(encoding=args.encoding) if args.filler else DEFAULT_FILLER
    lengths, depths = args.passkey, args.depths
    grid = passkey_grid(model, lambda n, d, g: text_passkey(tokenizer, n, d, g, filler_text=filler),
                        lengths, depths, args.samples, args.seed, progress=True)
    png = plot_passkey_heatmap({model.config.arch: grid}, out / "passkey_heatmap.png")
    return {**grid.to_dict(), "png": str(png)}
