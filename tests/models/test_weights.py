"""--weights files that are not state dicts are refused in one line that says what they hold."""
import pytest
import torch
from torch import nn

from utils.common.errors import DataError
from utils.models.factory import create_model
from utils.models.weights import load_weights_file


@pytest.fixture
def model():
    return create_model("tiny_cnn", 3, pretrained=False)


def test_a_pickled_whole_model_is_refused_naming_what_to_save(tmp_path, model):
    path = tmp_path / "whole.pth"
    torch.save(nn.Linear(3, 4), path)
    with pytest.raises(DataError, match="pickled Python objects.*model.state_dict") as e:
        load_weights_file(model, path)
    assert "\n" not in str(e.value) and "\x1b" not in str(e.value)


def test_a_text_file_is_refused_as_neither_format(tmp_path, model):
    path = tmp_path / "notes.pth"
    path.write_text("not weights")
    with pytest.raises(DataError, match="neither a torch state dict nor safetensors"):
        load_weights_file(model, path)
