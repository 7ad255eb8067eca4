"""mitotype: atypical vs normal mitotic figures under domain shift."""

__version__ = "0.1.0"
