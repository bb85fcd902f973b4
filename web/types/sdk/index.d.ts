// What ./sdk/index.js is to the dashboard's modules: the SDK (see ../../tsconfig.json).
export * from "../../../clients/js/src/index.js";
