// Conventional commits (https://www.conventionalcommits.org), as the release
// workflow reads them with git-cliff (cliff.toml). Long subjects are common in
// this repository (they say what and why), so the header limit is relaxed.
export default {
  extends: ["@commitlint/config-conventional"],
  rules: {
    "header-max-length": [2, "always", 200],
    "body-max-line-length": [0],
    "footer-max-line-length": [0],
    "subject-case": [0],
  },
};
