"""Builds the compiled DP core (a plain C shared library loaded with ctypes)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "membptt.planning._dpcore",
            ["src/membptt/planning/_dpcore.c"],
            extra_compile_args=["-O3"],
            py_limited_api=False,
        )
    ]
)
