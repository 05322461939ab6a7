"""The research harness, outside the wheel: the recipes' plumbing (recipe), the MNIST stand-ins (mnist) and the
paper's class-removal experiments (removal). Scripts in benchmarks/ and recipes/ import it from the checkout."""
