# llm-node %postun: on erase, the user goes; state in /var/lib/llm-node is kept
# (rpm has no purge: remove it by hand if you want the pulled models gone).
if [ "$1" = 0 ]; then
  getent passwd llm-node >/dev/null && userdel llm-node || true
  command -v systemctl >/dev/null && systemctl daemon-reload >/dev/null 2>&1 || true
fi
