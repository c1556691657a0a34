"""Import-time check of the torch/k2 pairing, with a message that says what to do."""

_HELP = (
    "fsalign needs k2 built for the installed torch. The tested stack is Python 3.9 + "
    "torch 1.13.1 + k2 1.23.4 from PyPI (`make setup`). With torch 2.x, install the k2 wheel "
    "matching your torch and CUDA from k2's own wheel index (see README, 'Installing')."
)


def check_stack() -> None:
    """Raises ImportError with installation advice when torch or k2 cannot be imported together."""
    try:
        import torch  # noqa: F401
    except ImportError as e:  # pragma: no cover - environment problem
        raise ImportError(f"fsalign could not import torch ({e}). {_HELP}") from e
    try:
        import k2  # noqa: F401
    except (ImportError, OSError) as e:  # pragma: no cover - environment problem
        raise ImportError(f"fsalign could not import k2 ({e}). {_HELP}") from e
    import _k2  # k2's extension, importable once k2 is

    built_for = getattr(getattr(_k2, "version", None), "torch_version", None)
    if built_for is not None:
        want = str(built_for).split("+")[0].split(".")[:2]
        have = torch.__version__.split("+")[0].split(".")[:2]
        if want != have:  # pragma: no cover - environment problem
            raise ImportError(
                f"k2 was built for torch {built_for}, but torch {torch.__version__} is installed. {_HELP}"
            )
