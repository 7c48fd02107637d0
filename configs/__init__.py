"""The run configs (``*.yaml``) and proxy tasks (``tasks/*.yaml``) shipped with evosearch.

pyproject.toml maps this folder onto the package ``evosearch.configs``: the files are edited here and
found through the import system in a checkout, an editable install and an installed wheel alike. This
file makes the folder a regular package because setuptools' editable installs cannot import a
namespace package mapped from outside its parent's folder (pypa/setuptools#4943).
"""
