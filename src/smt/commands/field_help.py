"""What each config field means, for `smt train --help`.

`smt train --help` shows a field's type (with its choices) and default, then this text; a field
missing here shows the comment on its own line in the dataclass (StrideHybridConfig, TrainingConfig,
RunConfig). Each text is whole sentences: one line of `--help` never stops mid-sentence, and
tests/test_cli.py checks that every field of every section has one.
"""

from __future__ import annotations

FIELD_HELP: dict[tuple[str, str], str] = {
    # ---- model: the window and the memory
    ("model", "n_ssm_outputs"): "N, the newest memory slots (SSM outputs) each token's window reads beside its "
                                "tokens; 0 turns the memory off (arch swa)",
    ("model", "m_input_tokens"): "M, the newest tokens each token's attention window reads",
    ("model", "stride"): "S, tokens per memory write: every S tokens the window is pooled into one vector and "
                         "written to the SSM memory (token_rate: every S-th token's memory read becomes a slot)",
    ("model", "memory"): "the memory strategy: gated_tokens (the default) pools the window's tokens only and runs "
                         "the SSM as one scan; slot_feedback (the seed's design) pools over the memory slots and "
                         "the tokens, a sequential chain; token_rate feeds every token to the SSM and reads its "
                         "output at every token, a slot every S tokens (old configs' pool_over_memory false / "
                         "true mean gated_tokens / slot_feedback)",
    ("model", "pooling_heads"): "heads of the attention pooling that turns a window into the vector a write "
                                "stores (d_model must divide by it)",
    ("model", "pool_position_bias"): "a learned pooling score per window position, so pooling can favour the "
                                     "newest tokens",
    ("model", "write_gate"): "a learned gate per write (from the pooled vector): the memory keeps g of the state "
                             "the write produces and 1 - g of the state before, so a write of filler can be "
                             "skipped; with token_rate a gate per token",
    ("model", "write_gate_sparsity"): "the weight of the gates' mean added to the training loss, so the memory "
                                      "pays for every write it keeps and closes filler writes exactly (the gate "
                                      "is hard: clipped to [0, 1]); must be > 0 with write_gate; null means "
                                      "1e-4 with write_gate and 0 without",
    ("model", "memory_read"): "how tokens read the memory: slots, through the N slots in the window only (the "
                              "seed's design); slots+state, each token also reads the memory's last SSM state "
                              "with its own query",
    # ---- model: the SSM memory
    ("model", "ssm_type"): "the memory's SSM layers: mamba (Mamba's selective scan) or simple (a stack of "
                           "diagonal linear recurrences, the light memory)",
    ("model", "ssm_n_layers"): "layers of the SSM memory (24 in Mamba-130M); for arch mamba, the model's layers",
    ("model", "ssm_d_state"): "state size per channel of each SSM layer (Mamba's d_state)",
    ("model", "ssm_d_conv"): "width of each Mamba layer's causal convolution",
    ("model", "ssm_expand"): "inner width of each Mamba layer, as a multiple of d_model",
    ("model", "ssm_dt_min"): "the smallest initial SSM step size dt (retention per step is exp(-dt * A)); null: "
                             "1e-4 for SMT's memory, Mamba's 1e-3 for arch mamba",
    ("model", "ssm_dt_max"): "the largest initial SSM step size dt; null: 1e-2 for SMT's memory, Mamba's 1e-1 for "
                             "arch mamba",
    ("model", "rms_norm_eps"): "epsilon of the SSM layers' RMSNorm",
    # ---- model: width, transformer, architecture
    ("model", "vocab_size"): "rows of the token embedding; training takes the tokenizer's (padded to a multiple "
                             "of 8) unless it is given",
    ("model", "d_model"): "the width of the model: embeddings, attention and the memory's input and output",
    ("model", "transformer_n_layers"): "transformer layers (12 in GPT-2 small); n_layers is its old name",
    ("model", "rope_base"): "the base of the rotary position angles (position rope)",
    ("model", "layer_norm_eps"): "epsilon of the transformer's LayerNorms",
    ("model", "arch"): "the architecture: smt (the Stride Memory Transformer), or a baseline built from the same "
                       "blocks: swa (sliding-window attention, no memory), gpt (full attention) or mamba (a Mamba "
                       "stack)",
    ("model", "context_length"): "arch gpt only: the most keys a token attends to (its trained context); longer "
                                 "streams slide the key/value cache; null keeps every key",
    ("model", "tie_embeddings"): "the output layer shares the token embedding's weights",
    ("model", "dropout"): "dropout probability in training",
    ("model", "initializer_range"): "standard deviation of the normal initialisation of the weights",
    ("model", "device"): "where the model is built (cpu, cuda, cuda:N, mps or auto); training moves it to "
                         "training.device",
    ("model", "dtype"): "the parameters' dtype (training.dtype sets the autocast precision of training)",
    # ---- training
    ("training", "batch_size"): "sequences per micro-batch on each process",
    ("training", "gradient_accumulation_steps"): "micro-batches summed into one optimizer step",
    ("training", "seq_len"): "tokens per training sequence (per stream segment with batching stream)",
    ("training", "lr"): "the peak learning rate (AdamW), reached after warmup_steps",
    ("training", "warmup_steps"): "optimizer steps of linear learning-rate warmup",
    ("training", "weight_decay"): "AdamW's decoupled weight decay, on weight matrices only (not on norms, biases "
                                  "or embeddings)",
    ("training", "beta1"): "AdamW's first-moment decay",
    ("training", "beta2"): "AdamW's second-moment decay",
    ("training", "grad_clip"): "the largest global gradient norm (clipped to it); 0 turns clipping off",
    ("training", "max_steps"): "optimizer steps to train; null trains for epochs",
    ("training", "epochs"): "passes over the training tokens; with max_steps too, whichever comes first",
    ("training", "eval_interval"): "optimizer steps between validation evaluations",
    ("training", "eval_batches"): "validation batches per evaluation (run.full_final_eval reads all of them at "
                                  "the end)",
    ("training", "log_interval"): "optimizer steps between the train records of metrics.jsonl",
    ("training", "checkpoint_interval"): "optimizer steps between checkpoints",
    ("training", "keep_last_checkpoints"): "checkpoints kept, the newest ones (the best one is always kept too)",
    ("training", "seed"): "the seed of the initialisation, dropout and, unless data_seed is set, the data order",
    ("training", "data_seed"): "the seed of the data order alone (null: the seed's), so model seeds can share one "
                               "order of the training data",
    ("training", "compile"): "run the model through torch.compile",
    ("training", "device"): "where training runs: cpu, cuda, cuda:N, mps or auto",
    # ---- run
    ("run", "valid_data"): "validation data, as train_data (null: valid_fraction, or no validation)",
    ("run", "valid_split"): "the split of valid_data, as train_split",
    ("run", "tokenizer"): "a tokenizer.json, a directory holding one, or a hub name; with tokenizer_vocab_size "
                          "set, a tokenizer is trained on train_data and saved here when it is missing",
    ("run", "tokenizer_vocab_size"): "the vocabulary of the byte-level BPE tokenizer trained when run.tokenizer "
                                     "is missing",
    ("run", "data_encoding"): "the encoding of text data files (e.g. latin-1)",
    ("run", "text_field"): "the field holding the text in .jsonl data files",
    ("run", "max_valid_tokens"): "use only the first validation tokens (quick runs, tests)",
    ("run", "output_dir"): "the run directory: checkpoints, metrics, config.yaml and the loss curve",
    ("run", "progress"): "show progress bars",
}
