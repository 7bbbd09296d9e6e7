# llm-node %postun: on erase, the user goes; state in /var/lib/llm-node is kept
# (rpm has no purge: remove it by hand if you want the pulled models gone).
if [ "$1" = 0 ]; then
  getent passwd llm-node >/dev/null && userdel llm-node || true
  # The package owns its files, not their folders (cargo-generate-rpm lists
  # files only): remove the folders it made when nothing else is in them.
  rmdir /usr/lib/llm-node /etc/llm-node 2>/dev/null || true
  command -v systemctl >/dev/null && systemctl daemon-reload >/dev/null 2>&1 || true
fi
