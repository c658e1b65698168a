"""Evaluation: perplexity, streaming, loss by position, passkey, MQAR, synthetic tasks, analysis."""
