# llm-node %post: the system user and its directories. Idempotent.
getent group llm-node >/dev/null || groupadd --system llm-node
getent passwd llm-node >/dev/null || useradd --system --gid llm-node \
  --home-dir /var/lib/llm-node --no-create-home --shell /sbin/nologin llm-node
for g in video render; do getent group "$g" >/dev/null && usermod -aG "$g" llm-node || true; done
install -d -o llm-node -g llm-node -m 0750 /var/lib/llm-node /var/lib/llm-node/models \
  /var/cache/llm-node /var/log/llm-node
chown root:llm-node /etc/llm-node/llm-node.env
command -v systemctl >/dev/null && systemctl daemon-reload >/dev/null 2>&1 || true
