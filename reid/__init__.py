"""Person re-identification pipeline reproducing Jamal et al., Symmetry 2020 (mutual attention)."""

__version__ = "0.1.0"
