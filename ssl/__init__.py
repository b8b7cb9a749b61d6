"""seafloor-ssl trainer and evaluation (``python -m ssl.train``, ``python -m ssl.evaluate``).

This folder shares its name with the standard library's TLS module. Run from the repo root,
Python finds this package first when anything (httpx, asyncio, prefect) does ``import ssl``.
"""

# When imported under the name ``ssl`` we are shadowing the standard library's TLS module, so
# execute its source in this namespace first: ``ssl.create_default_context()`` and friends keep
# working for every library in the process. Under the installed name (``seafloor_ssl``) the
# standard module is not shadowed and nothing needs loading.
if __name__ == "ssl":
    import os as _os
    import sysconfig as _sysconfig

    _stdlib_ssl = _os.path.join(_sysconfig.get_paths()["stdlib"], "ssl.py")
    with open(_stdlib_ssl, encoding="utf-8") as _f:
        exec(compile(_f.read(), _stdlib_ssl, "exec"))
    del _f, _stdlib_ssl, _os, _sysconfig
