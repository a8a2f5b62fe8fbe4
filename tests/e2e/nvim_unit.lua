-- Runs the Neovim plugin's setup() against stand-in servers, in seconds, for what the end-to-end
-- test is too slow to cover: a cmd that cannot start, a server that exits at start, a server that
-- never answers. Run by tests/test_editor_neovim.py as `nvim --headless --clean -l nvim_unit.lua`.
-- Input (environment): PLUGIN (editors/neovim), FILE (a Python file to open), RESULT (where the JSON
-- goes), SCENARIO (JSON: setup = the options, request_timeout_ms, exec = a titans-lsp.* command
-- to run once a client is up, wait_ms, set_mode = a mode set as :TitansMode does). Output: RESULT holds the notifications and the statusline.
vim.opt.rtp:prepend(os.getenv('PLUGIN'))
vim.cmd('filetype on')
local scenario = vim.json.decode(os.getenv('SCENARIO'))
local messages = {}
vim.notify = function(msg, level)
  table.insert(messages, { msg = tostring(msg), level = level })
end

local titans = require('titans_lsp')
if scenario.request_timeout_ms then
  titans.request_timeout_ms = scenario.request_timeout_ms
end
local ok, err = pcall(titans.setup, scenario.setup or {})
local mode_ok, mode_error = true, nil
if scenario.set_mode then -- what :TitansMode runs
  mode_ok, mode_error = pcall(titans.set_mode, scenario.set_mode)
end
vim.cmd.edit(os.getenv('FILE'))
local attached = vim.wait(scenario.wait_ms or 3000, function()
  local client = vim.lsp.get_clients({ name = 'titans', bufnr = 0 })[1]
  return client ~= nil and client.initialized
end, 20)
if attached and scenario.exec then
  titans.exec(scenario.exec, function(result)
    table.insert(messages, { msg = 'answered ' .. vim.inspect(result), level = -1 })
  end)
end
vim.wait(scenario.settle_ms or 1000, function() return false end, 20)
local result = {
  setup_ok = ok, setup_error = ok and vim.NIL or tostring(err), attached = attached, messages = messages,
  statusline = titans.statusline(), commands = vim.tbl_keys(vim.api.nvim_get_commands({})),
  set_mode_ok = mode_ok, set_mode_error = mode_ok and vim.NIL or tostring(mode_error), mode = titans.mode(),
}
local file = assert(io.open(os.getenv('RESULT'), 'w'))
file:write(vim.json.encode(result))
file:close()
