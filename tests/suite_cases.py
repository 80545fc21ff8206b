"""Small suite files shared by the suite tests (tests/test_suites.py, tests/test_suite_slurm.py)."""

SYNTH = 'dataset_args = { count = 4, height = 40, width = 56 }'

#: A tiny Sempart training (EPOCHS to fill in) and the run that evaluates its checkpoint.
TRAIN = f"""
[[train]]
name = "train-sempart"
method = "sempart"
dataset = "synthetic"
{SYNTH}
backbone = "effnet-lite0"
backbone_args = {{ stride = 8 }}
method_args = {{ image_size = 32 }}
epochs = EPOCHS
batch_size = 2
device = "cpu"

[[run]]
name = "sempart"
method = "sempart"
checkpoint_from = "train-sempart"
dataset = "synthetic"
{SYNTH}
device = "cpu"
workers = 0
"""
