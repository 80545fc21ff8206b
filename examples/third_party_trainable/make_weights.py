"""Writes harness_tiny_cnn/tiny_cnn.pt: the network's weights as torch initialises them from seed 0.

    python make_weights.py

(torch.save's archive carries a fresh serialization id, so the file's bytes, and with them the
weights digest, change every time this runs; the values do not.)
"""
from pathlib import Path

import torch

from harness_tiny_cnn import build_network

torch.manual_seed(0)
torch.save(build_network().state_dict(), Path(__file__).with_name("harness_tiny_cnn") / "tiny_cnn.pt")
