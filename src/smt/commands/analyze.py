"""`smt analyze --checkpoint DIR --text FILE --out DIR`: attention-pooling statistics of a document."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("analyze", help="attention-pooling statistics and pictures for one document",
                            description="Streams FILE through an SMT checkpoint and reports the pooling "
                                        "weights: share on memory slots vs tokens, entropy, weight by window "
                                        "position, and how they change along the document; writes PNGs.")
    parser.add_argument("--checkpoint", required=True, metavar="DIR",
                        help="run, checkpoints/, step or model directory (with tokenizer.json)")
    parser.add_argument("--text", required=True, metavar="FILE", help="a text file (UTF-8 unless --encoding)")
    parser.add_argument("--encoding", default="utf-8", help="the text file's encoding (e.g. latin-1)")
    parser.add_argument("--out", default=None, help="output directory (default RUN_DIR/analysis)")
    parser.add_argument("--max-tokens", "--max_tokens", type=int, default=None)
    parser.add_argument("--segment-len", "--segment_len", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from smt.commands.eval import default_out_dir, load_for_eval
    from smt.evaluation.analysis import analyze_document, write_analysis_plots
    from smt.evaluation.pooling_analyzer import describe_pooling

    model, tokenizer, directory = load_for_eval(args.checkpoint, args.device)
    if tokenizer is None:
        raise FileNotFoundError(f"{directory} has no tokenizer.json; analysing a text needs the model's tokenizer")
    text_file = Path(args.text)
    if not text_file.is_file():
        raise FileNotFoundError(f"text file not found: {text_file}")
    try:
        text = text_file.read_text(encoding=args.encoding)
    except UnicodeDecodeError as error:
        raise ValueError(f"{text_file} is not {args.encoding} text (byte {error.start}: {error.reason}); convert it "
                         "to UTF-8 or give its encoding, e.g. --encoding latin-1") from error
    except LookupError as error:
        raise ValueError(f"--encoding {args.encoding!r} is not an encoding Python knows ({error})") from error
    tokens = tokenizer.encode(text)
    if args.max_tokens:
        tokens = tokens[: args.max_tokens]
    stats = analyze_document(model, tokens, args.segment_len, progress=True)
    out = Path(args.out) if args.out else default_out_dir(args.checkpoint, "analysis")
    pictures = write_analysis_plots(model, stats, out)
    summary = {k: v for k, v in stats.items()
               if k not in ("weights", "memory_share_by_write", "entropy_by_write", "max_entropy_by_write")}
    summary["text"] = str(text_file)
    summary["pooling"] = describe_pooling(stats)
    (out / f"{text_file.stem}.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    pools_memory = model.config.pool_over_memory
    print(f"{stats['n_tokens']} tokens, {stats['n_writes']} writes: {stats['ssm_total']:.1%} of the pooling "
          f"weight on memory slots{'' if pools_memory else ' (this model pools tokens only)'}")
    print(f"entropy {stats['entropy']:.3f} of at most {stats['max_entropy']:.3f} nats (a uniform pooling over the "
          f"{visible_positions(stats, pools_memory)} a write can weigh)")
    print(summary["pooling"])
    for part in stats["along_document"]:
        print(f"  tokens {part['first_token']:>8}-{part['last_token']:<8} memory share {part['memory_share']:.3f} "
              f"entropy {part['entropy']:.3f} of at most {part['max_entropy']:.3f}")
    print("wrote " + ", ".join(str(p) for p in [*pictures, out / f"{text_file.stem}.json"]))
    return 0


def visible_positions(stats: dict, pools_memory: bool) -> str:
    """The positions the entropy's maximum counts, in words ('64 tokens', '8 memory slots + 64 tokens')."""
    if not pools_memory:
        return f"{stats['visible_tokens']} tokens"
    return f"{stats['visible_slots']} memory slots + {stats['visible_tokens']} tokens"
