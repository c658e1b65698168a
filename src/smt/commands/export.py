"""`smt export RUN OUT`: a run's model as a plain model directory, for transformers and the Hub.

    smt export runs/x out/x                          the best checkpoint (lowest validation loss), else the latest
    smt export runs/x out/x --latest                 the latest checkpoint
    smt export runs/x/checkpoints/step_000400 out/x  one step
OUT gets config.json, the weights, the tokenizer, generation_config.json, the model card (the run's training
settings, datasets and the step's validation loss) and checksums.json, without the optimizer and stream state:
AutoModelForCausalLM.from_pretrained(OUT) and smt.model_directory.push_to_hub take it (a run directory itself
is no model directory: transformers finds no config.json in it).
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    parser = sub.add_parser("export", help="write a run's best (or latest) checkpoint as a plain model directory "
                                           "for transformers and the Hub",
                            description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN",
                        help="a run directory, its checkpoints/ directory or one step directory")
    parser.add_argument("out", metavar="OUT", help="the model directory to write (new or empty, or one exported "
                                                   "before, which is replaced)")
    parser.add_argument("--latest", action="store_true",
                        help="export the latest checkpoint, not the best (default: the best, else the latest)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from smt.training.checkpoint import export_model

    step, record = export_model(args.run_dir, args.out, prefer_best=not args.latest)
    print(json.dumps({"exported": str(step), "step": record.get("step"), "val_loss": record.get("val_loss"),
                      "out": str(args.out)}, indent=2))
    print(f"load it with AutoModelForCausalLM.from_pretrained({str(args.out)!r}) (after `import smt.hf`, or with "
          "trust_remote_code=True), or share it with smt.model_directory.push_to_hub")
    return 0
