#!/usr/bin/env python3
"""Prepare a LibriSpeech-layout corpus: manifests, fbank features, tokenizers.

    python recipes/librispeech/prepare.py --corpus-dir data/LibriSpeech \
        --alignments-dir data/alignments/LibriSpeech --parts train-clean-5 dev-clean-2 --output-dir exp/data

Stages (resumable; --stage/--stop-stage select): 0 download (only with --download),
1 manifests, 2 features + cuts, 3 tokenizers. See docs/prepare.md and ``fsalign.corpus.prepare``.
"""
from fsalign.corpus.prepare import main

if __name__ == "__main__":
    main()
