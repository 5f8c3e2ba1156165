"""Networks: an encoder (MLP for vectors, Nature CNN for uint8 frames), an rlstm core, heads; a
trained agent loaded for use from Python."""

from agents.encoders import MLPEncoder, NatureCNN, make_encoder
from agents.policy import TrainedPolicy
from agents.recurrent import RecurrentAgent, layer_init

__all__ = [
    "MLPEncoder",
    "NatureCNN",
    "RecurrentAgent",
    "TrainedPolicy",
    "layer_init",
    "make_encoder",
]
