"""The C extension modules; everything else about the package is in pyproject.toml ([project])."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "customs.pki.gost._hashes",
            sources=["customs/pki/gost/_hashes.c"],
            extra_compile_args=["-O3", "-std=c99", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
        )
    ]
)
