-- Loaded by any plugin manager; nothing starts until require('titans_lsp').setup() is called.
if vim.fn.has('nvim-0.12') == 0 then
  vim.notify_once('titans-lsp needs Neovim 0.12+ (vim.lsp.inline_completion)', vim.log.levels.WARN)
end
