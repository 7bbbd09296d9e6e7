# llm-node %preun: on erase (not upgrade), stop and disable the service.
if [ "$1" = 0 ] && command -v systemctl >/dev/null; then
  systemctl disable --now llm-node >/dev/null 2>&1 || true
fi
