import sys

from genai_ray.cli import main

sys.exit(main())
