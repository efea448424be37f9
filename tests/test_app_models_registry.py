"""The model registry: every model type's parameter count agrees with the model it builds."""

import numpy as np
import pytest

from handgrad.app.models import (
    MODEL_TYPES,
    ArchitectureError,
    build_model,
    char_arch,
    cnn_arch,
    count_parameters,
    describe,
    get_model_type,
    mlp_arch,
    named_params,
    named_state,
    rnn_arch,
)

ARCHS = [
    mlp_arch(),
    mlp_arch(hidden=(7, 5), n_classes=3, input_shape=(3, 4), batch_norm=True, dropout=0.5),
    cnn_arch(),
    cnn_arch(channels=(3, 5), hidden=(), n_classes=4, input_shape=(3, 16, 16), batch_norm=False, dropout=0.0),
    cnn_arch(channels=(2,), hidden=(6, 4), n_classes=2, input_shape=(9, 7), kernel_size=5),
    rnn_arch("lstm"),
    rnn_arch("gru"),
    rnn_arch("rnn"),
    rnn_arch("lstm", hidden=(7, 5), n_classes=3, input_shape=(4, 6)),
    rnn_arch("gru", hidden=(3, 4, 2), n_classes=2, input_shape=(1, 1)),
    rnn_arch("rnn", hidden=(6, 9), n_classes=4, input_shape=(5, 3), nonlinearity="relu"),
    char_arch("lstm", 112),
    char_arch("gru", 5, embedding_dim=3, hidden=(4, 6)),
    char_arch("rnn", 2, embedding_dim=1, hidden=(1,)),
]


@pytest.mark.parametrize("arch", ARCHS, ids=describe)
def test_count_parameters_is_what_the_built_model_holds(arch):
    model = build_model(arch, rng=0)
    held = sum(a.size for a in named_params(model).values()) + sum(
        a.size for a in named_state(model).values()
    )
    assert count_parameters(arch) == held


def test_the_reference_mlp_leads_the_registry_and_unknown_types_name_the_choices():
    assert list(MODEL_TYPES)[:2] == ["mlp", "cnn"]
    known = r"\(this version knows: char-gru, char-lstm, char-rnn, cnn, gru, lstm, mlp, rnn\)"
    with pytest.raises(ArchitectureError, match=rf"unknown model type 'transformer' {known}"):
        get_model_type("transformer")
    with pytest.raises(ArchitectureError, match="an mlp needs one or more hidden layers"):
        build_model(mlp_arch(hidden=()), rng=0)


def test_a_colour_cnn_takes_channels_first_images():
    arch = cnn_arch(channels=(4,), hidden=(8,), n_classes=4, input_shape=(3, 16, 16))
    model = build_model(arch, rng=0).eval()
    X = np.random.default_rng(1).random((5, 3, 16, 16), dtype=np.float32)
    assert model.forward(get_model_type("cnn").prepare_inputs(arch, X)).shape == (5, 4)
