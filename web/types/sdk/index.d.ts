// What ./sdk/index.js is to the dashboard's modules: the SDK, by its published types
// (clients/js/types/; see ../../tsconfig.json).
export * from "../../../clients/js/types/index.js";
