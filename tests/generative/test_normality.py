"""The paper's premise, measured on the bundled model: inverted noise of its own samples is N(0, I),
that of natural images is not.

Own samples: draw x_T ~ N(0, I), DDIM-sample x_0, DDIM-invert x_0 back over all N steps, and
test the recovered x_T against N(0, 1) (KS at the fixed level 0.01). Natural images: the same
inversion of photo crops. Sample-derived noise should pass; photo-derived noise should be
further from N(0, 1) on the same KS statistic.
"""

from __future__ import annotations

import pytest
import torch

from generative.ddim import DDIM
from generative.metrics import noise_stats

N_STEPS = 20


@pytest.fixture(scope="module")
def inverted(pixel_model, eval_images):
    ddim = DDIM(pixel_model, N_STEPS)
    s = pixel_model.sample_size
    xT, x0 = ddim.generate(3, (3, s, s), generator=torch.Generator().manual_seed(0))
    own = ddim.invert(x0)
    photos = eval_images[1][[0, 3, 6]]  # astronaut, chelsea, coffee (whole photos)
    nat = ddim.invert(photos)
    return xT, own, nat


def test_own_samples_invert_to_gaussian_noise(inverted) -> None:
    xT, own, _ = inverted
    for i in range(own.shape[0]):
        st = noise_stats(own[i])
        assert st.is_normal, st
        # and it is the noise the sample came from (inversion works), not just any Gaussian
        assert torch.nn.functional.cosine_similarity(own[i].flatten(), xT[i].flatten(), dim=0) > 0.9


def test_natural_images_invert_to_less_gaussian_noise(inverted) -> None:
    _, own, nat = inverted
    own_ks = [noise_stats(z).ks_stat for z in own]
    nat_stats = [noise_stats(z) for z in nat]
    assert min(s.ks_stat for s in nat_stats) > max(own_ks), (own_ks, nat_stats)
    assert not any(s.is_normal for s in nat_stats), nat_stats
