from setuptools import find_packages, setup

setup(name="disttrainer", version="0.1", packages=find_packages())
