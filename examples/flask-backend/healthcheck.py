"""Docker HEALTHCHECK for the backend image: exit 0 if GET http://127.0.0.1:$PORT/healthz is 200."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT', '8080')}/healthz"
try:
    with urllib.request.urlopen(url, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as error:  # noqa: BLE001 - any failure means unhealthy
    print(f"unhealthy: {url}: {error}", file=sys.stderr)
    sys.exit(1)
