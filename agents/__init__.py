"""Networks: an encoder (MLP for vectors, Nature CNN for uint8 frames), an rlstm core, heads."""

from agents.encoders import MLPEncoder, NatureCNN, make_encoder
from agents.recurrent import RecurrentAgent, layer_init

__all__ = ["MLPEncoder", "NatureCNN", "RecurrentAgent", "layer_init", "make_encoder"]
