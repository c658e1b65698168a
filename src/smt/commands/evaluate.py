"""`smt evaluate --tasks TASKS --model DIR`: lm-evaluation-harness tasks on an SMT model.

    smt evaluate --tasks wikitext,arc_easy --model runs/x                    lm_eval's own tasks
    smt evaluate --tasks my_task --model runs/x --include-path my_tasks/     YAML tasks in a directory
    smt evaluate --tasks arc_easy --model runs/x --limit 50 --out arc.json   50 examples, results as JSON
Runs lm_eval.simple_evaluate with the "smt" model (smt.evaluation.lm_eval_adapter): documents
are streamed whole for perplexity tasks (no windows), and a shared context is read once for
multiple-choice tasks. Needs the lm-eval extra: `pip install 'stride-memory[lm-eval]'` (or `pip install -e
'.[lm-eval]'` in a checkout).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

from smt.distribution import install

LM_EVAL_MISSING = (f"lm-evaluation-harness is not installed; install it with {install('lm-eval')} "
                   "(or pip install lm_eval)")


def add_parser(sub) -> None:
    parser = sub.add_parser("evaluate", help="run lm-evaluation-harness tasks (needs stride-memory[lm-eval])",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", required=True, help="comma-separated lm_eval task, group or tag names "
                        "(or task YAML files)")
    parser.add_argument("--model", required=True, metavar="DIR",
                        help="model directory, step directory, checkpoints/ or run directory")
    parser.add_argument("--limit", type=float, default=None,
                        help="at most N examples per task (a fraction when below 1; for quick checks only)")
    parser.add_argument("--include-path", "--include_path", action="append", default=None, metavar="PATH",
                        help="a directory of task YAML files (repeatable)")
    parser.add_argument("--out", default=None, metavar="FILE", help="write the results as JSON to FILE")
    parser.add_argument("--num-fewshot", "--num_fewshot", type=int, default=None)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=16,
                        help="continuations scored per forward call (default 16)")
    parser.add_argument("--segment-len", "--segment_len", type=int, default=512,
                        help="tokens per forward call along a stream (default 512, as smt eval)")
    parser.add_argument("--rolling", choices=("smt", "eos_prefix"), default="smt",
                        help="perplexity convention: smt (= smt eval: first token unscored, closing eos "
                             "scored) or eos_prefix (lm_eval's: eos as the context, every token scored)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer.json (default: the model directory's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-samples", "--log_samples", action="store_true",
                        help="keep every request and answer in the --out JSON")
    parser.set_defaults(run=run)


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hugging Face Hub (where lm_eval's own tasks load their data sets) cannot be reached, or
    None. Asked once up front: offline, `datasets` retries every download five times and then fails
    with a long traceback. With HF_DATASETS_OFFLINE / HF_HUB_OFFLINE set, the cache is used: no check."""
    offline = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    if any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in offline):
        return None
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout).close()
    except OSError as error:
        return f"{url.hostname} cannot be reached ({error.__class__.__name__}: {error})"
    return None


def _task_manager(TaskManager, include_path: list[str] | None, tasks: list[str]):
    """lm_eval's task index, and whether every task is a local one. Indexing its built-in tasks takes
    seconds (thousands of YAML files), so when every requested task is a plain task of the
    --include-path directories, only those are indexed."""
    if include_path:
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in local.all_subtasks for t in tasks):
            return local, True
    return TaskManager(include_path=include_path), False


def run(args: argparse.Namespace) -> int:
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
        from lm_eval.utils import handle_non_serializable, make_table

        import smt.evaluation.lm_eval_adapter  # noqa: F401  (registers the "smt" model)
    except ImportError as error:
        if "lm_eval" not in str(getattr(error, "name", "") or error):
            raise
        print(f"smt evaluate: error: {LM_EVAL_MISSING}", file=sys.stderr)
        return 2
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks:
        raise ValueError("--tasks names no task; pass e.g. --tasks wikitext,arc_easy")
    if not Path(args.model).exists():
        raise FileNotFoundError(f"--model {args.model}: no such model, checkpoint or run directory")
    for path in args.include_path or []:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--include-path {path}: no such directory")
    limit = args.limit
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"--limit {args.limit:g} must be > 0")
        limit = int(limit) if limit >= 1 else limit
    manager, local = _task_manager(TaskManager, args.include_path, tasks)
    unknown = [t for t in tasks if t not in manager.all_tasks and not Path(t).is_file()]
    if unknown:
        raise ValueError(f"unknown lm_eval task(s) {', '.join(unknown)}; see `lm_eval ls tasks`, or pass "
                         "--include-path DIR for a directory of task YAML files")
    reason = None if local or all(Path(t).is_file() for t in tasks) else hub_unreachable()
    if reason:
        print(f"smt evaluate: error: lm_eval's task(s) {', '.join(tasks)} load their data sets from the Hugging "
              f"Face Hub, and {reason}. Connect to the network; or, with the data sets already in the local "
              "cache, set HF_DATASETS_OFFLINE=1; or evaluate a local task: --include-path DIR with task YAML "
              "files over local data", file=sys.stderr)
        return 2
    model_args = {"pretrained": args.model, "device": args.device, "batch_size": args.batch_size,
                  "segment_len": args.segment_len, "rolling": args.rolling}
    if args.tokenizer:
        model_args["tokenizer"] = args.tokenizer
    results = lm_eval.simple_evaluate(
        model="smt", model_args=model_args, tasks=tasks, num_fewshot=args.num_fewshot, limit=limit,
        task_manager=manager, log_samples=args.log_samples, random_seed=args.seed, numpy_random_seed=args.seed,
        torch_random_seed=args.seed, fewshot_random_seed=args.seed)
    print(make_table(results))
    if results.get("groups"):
        print(make_table(results, "groups"))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False),
                       encoding="utf-8")
        print(f"results written to {out}")
    return 0
