"""Find the shipped recipes/ and schemas/, from a wheel or from a source checkout."""

from importlib import resources
from pathlib import Path


def data_dir(name: str) -> Path:
    """Directory of shipped data `name` ("recipes" or "schemas")."""
    packaged = Path(str(resources.files("bridge_cli"))) / "_data" / name
    if packaged.is_dir():
        return packaged
    source = Path(__file__).resolve().parent.parent / name  # editable install / checkout
    if source.is_dir():
        return source
    raise FileNotFoundError(f"bridge's {name}/ directory is missing from this installation")
