"""Features of long recordings computed a piece at a time equal lhotse's in one call."""
import numpy as np
import pytest
from lhotse import Fbank, FbankConfig, Mfcc, Recording

from fsalign.corpus.cuts import default_extractor
from fsalign.corpus.recordings import chunked_features
from tests.align_fixtures import shipped_utterances


@pytest.mark.parametrize("extractor", [default_extractor(), Mfcc(), Fbank(FbankConfig(frame_length=0.032))])
@pytest.mark.parametrize("trim", [0, 77, 159, 160, 161])
def test_chunked_features_equal_one_call(extractor, trim):
    audio = np.concatenate([Recording.from_file(f).load_audio() for _, _, f in shipped_utterances()[:2]], 1)
    audio = audio[:, :audio.shape[1] - trim]
    whole = extractor.extract(audio, 16000)
    for chunk_s in (0.37, 1.0, 2.5):
        got = chunked_features(audio, 16000, extractor, chunk_s=chunk_s)
        assert got.shape == whole.shape
        np.testing.assert_allclose(got, whole, rtol=1e-5, atol=1e-5)
