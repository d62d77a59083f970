"""Package layout (metadata lives in pyproject.toml): the repository's `data/` folder ships inside the
package as `interp/data/`, so a wheel install finds it through `importlib.resources` (`interp.resources`)."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["interp", "interp.*"]), "interp.data"],
    package_dir={"interp.data": "data"},
    package_data={"interp": ["py.typed", "report/js/*.js", "report/js/*.css"], "interp.data": ["**/*"]},
)
