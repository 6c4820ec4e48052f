"""``python -m memwise.testing.fake_openai``: serve a fake server (see :mod:`memwise.testing.fake_openai._cli`)."""

from memwise.testing.fake_openai._cli import main

if __name__ == "__main__":
    main()
