"""The paper's experiment in miniature: a seeded synthetic world with known ground truth, its raw
data in the public datasets' layouts, a known reward function, a tiny pretrained base model and an
evaluation against the ground truth. See each module's docstring."""
