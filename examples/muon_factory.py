"""An optimizer factory: Muon on the hidden weight matrices, AdamW on the rest.

Named in a family spec as ``train: {optimizer: "muon_factory:muon", lr: 0.02}``. seedstab
calls ``muon(model, lr=..., **optimizer_kwargs)`` (and ``weight_decay=`` when the spec sets
``train.weight_decay``) with the freshly built model, so the split can look at parameter
names and shapes. Muon is pytorch-optimizer's (``pip install pytorch-optimizer``).
"""

from pytorch_optimizer import Muon


def muon(model, *, lr, adamw_lr=3e-4, weight_decay=0.0):
    # matrices inside the blocks go to Muon; embeddings, the unembedding, norms and biases to AdamW
    hidden, rest = [], []
    for name, p in model.named_parameters():
        inside = name.startswith("blocks.") or ".layers." in name or ".h." in name
        (hidden if p.ndim >= 2 and inside else rest).append(p)
    return Muon([{"params": hidden, "use_muon": True}, {"params": rest, "use_muon": False}],
                lr=lr, adamw_lr=adamw_lr, weight_decay=weight_decay)
