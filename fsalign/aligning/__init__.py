"""Aligning a corpus: the aligner, batch and shard planning, the resumable journal, outputs and plots."""
