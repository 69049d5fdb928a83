"""Ship the top-level recipes/ and schemas/ inside the package as bridge_cli/_data/.

They live at the repository's top level (DESIGN.md) so that users and reviewers find them,
and a non-editable ``pip install .`` must still carry them: this copies both trees into
the built package. ``bridge_cli.resources`` finds them in either place.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent


class BuildWithData(build_py):
    def run(self):
        super().run()
        for name in ("recipes", "schemas"):
            src = HERE / name
            dst = Path(self.build_lib) / "bridge_cli" / "_data" / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst)


setup(cmdclass={"build_py": BuildWithData})
