"""Browser tests: the console in Debian's chromium, driven by Playwright."""
